"""The script↔cluster seam: both sides implement every request, and the server forwards
what a script may ask."""

import inspect

from gpar import seam
from gpar.client import ServerTasks
from gpar.raytasks import RayTasks


def test_both_sides_implement_every_method_of_the_seam_with_its_parameters():
    methods = {name for name, member in vars(seam.Tasks).items()
               if inspect.isfunction(member) and not name.startswith("_")}
    assert seam.REQUESTS <= methods
    for side in (RayTasks, ServerTasks):
        for name in methods:
            assert name in vars(side), f"{side.__name__} lacks {name}"
            assert (list(inspect.signature(vars(side)[name]).parameters)
                    == list(inspect.signature(vars(seam.Tasks)[name]).parameters)), name


class _FailingSubmits:
    """A Session's RayTasks stand-in: submit refuses, wait answers what it is given."""

    def submit(self, key, *args):
        raise ValueError(f"refused {key}")

    def wait(self, timeout_s):
        return [("news", timeout_s)]

    def cpus(self):
        return 2


def test_a_launch_waits_for_no_answer_and_its_failure_is_raised_by_the_next_request():
    import threading
    from multiprocessing import Pipe

    from gpar.server import Session

    script_end, server_end = Pipe()
    session = object.__new__(Session)
    session.tasks, session.refs, session.unanswered = _FailingSubmits(), {}, None
    serving = threading.Thread(target=session.run, args=(server_end,), daemon=True)
    serving.start()
    tasks = object.__new__(ServerTasks)
    tasks.conn, tasks.broken, tasks.calling = script_end, False, threading.Lock()
    assert tasks.submit("batch 1", None, {}) is None
    assert not script_end.poll(0.2)  # nothing answered it
    assert tasks.cpus() == 2  # another thread's request is answered as usual
    try:
        tasks.wait(0.5)
    except ValueError as error:
        assert str(error) == "refused batch 1"
    else:
        raise AssertionError("the refused launch went unnoticed")
    assert tasks.wait(0.5) == [("news", 0.5)]  # answers stay in step with requests
    script_end.close()
    serving.join(5)
