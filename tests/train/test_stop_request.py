"""The stop request a signal makes: a flag the loop honours at its stop points, never an exception thrown into
whatever code the signal interrupted; the second signal stops at once."""

import os
import signal

import pytest

from prefix_rft_megatron.process.signals import StopRequest


def test_first_signal_sets_the_flag_second_raises_at_once(capfd):
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before os.kill returns (main thread)
        assert stop.requested and stop.name == "SIGTERM"
        assert "SIGTERM: stopping when the current stage of the step ends" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
