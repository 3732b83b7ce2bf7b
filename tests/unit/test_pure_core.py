"""The pure core and the stream definitions import without Synapse (STYLE: a core
with no I/O), so that a Synapse release can only break the compat layer."""

import subprocess
import sys


def test_core_and_streams_do_not_import_synapse() -> None:
    code = (
        "import sys\n"
        "import synapse_syncv3, synapse_syncv3.config, synapse_syncv3.errors\n"
        "import synapse_syncv3.core.tokens, synapse_syncv3.core.params\n"
        "import synapse_syncv3.core.request, synapse_syncv3.core.acks\n"
        "import synapse_syncv3.streams\n"
        "bad = sorted(m for m in sys.modules if m == 'synapse' or m.startswith('synapse.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
