"""Taking a model out of charnn: an ONNX step graph, a static web folder that runs it in a browser, and the
model shipped inside the package."""
