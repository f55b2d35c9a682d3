"""The script↔cluster seam: both sides implement every request, and the server forwards
what a script may ask."""

import inspect

from gpar import seam
from gpar.client import ServerTasks
from gpar.tasks import RayTasks


def test_both_sides_implement_every_method_of_the_seam_with_its_parameters():
    methods = {name for name, member in vars(seam.Tasks).items()
               if inspect.isfunction(member) and not name.startswith("_")}
    assert seam.REQUESTS <= methods
    for side in (RayTasks, ServerTasks):
        for name in methods:
            assert name in vars(side), f"{side.__name__} lacks {name}"
            assert (list(inspect.signature(vars(side)[name]).parameters)
                    == list(inspect.signature(vars(seam.Tasks)[name]).parameters)), name
