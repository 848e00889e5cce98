"""The package root: subpackages reachable as attributes, and the library never imports the command line."""

import subprocess
import sys


def test_subpackages_are_attributes_and_the_cli_is_not_imported():
    code = ("import sys, sgm_pyro\n"
            "assert 'sgm_pyro.cli' not in sys.modules\n"
            "assert 'matplotlib' not in sys.modules  # analysis loads on first use\n"
            "x, _ = sgm_pyro.data.dsprites(2, seed=0)\n"
            "assert x.shape == (2, 1, 64, 64)\n"
            "assert sgm_pyro.models.SGM is sgm_pyro.SGM and sgm_pyro.inference.iwlb is sgm_pyro.iwlb\n"
            "assert callable(sgm_pyro.analysis.training_curves) and sgm_pyro.groups.AffineGroup\n"
            "assert sgm_pyro.experiments.__name__ == 'sgm_pyro.experiments'\n"
            "assert {'analysis', 'data', 'models', 'inference'} <= set(dir(sgm_pyro))\n"
            "assert 'sgm_pyro.cli' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
