"""The model and its fast layers: the recurrent network, the CPU LSTM layer and the one-char stepper."""
