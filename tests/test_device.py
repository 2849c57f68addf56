"""What charnn reads of the machine it runs on."""

import time

import pytest

from charnn.device import CoreWait, cpu_times_s
from conftest import busy_cores


@pytest.mark.skipif(cpu_times_s() is None, reason="this system does not say how long threads wait for a core")
def test_the_wait_for_a_core_is_a_share_of_the_time_with_work():
    waiting = CoreWait()
    with busy_cores():
        waiting.take()
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass
        busy = waiting.take()
    assert busy is not None and 0.3 < busy < 1, busy  # three programs on one core: about 2/3
