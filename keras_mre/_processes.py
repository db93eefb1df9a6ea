"""Who owns a temporary directory, and whether that process still runs.

Writers of data sets and exports put their process id and host next to (or
into the name of) their temporary directories, so that a later writer can
tell a directory left by a killed process from one still being written.
"""

import os
import re
import socket


def this_host():
    """This machine's host name, reduced to characters safe in file names."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())


def process_alive(pid):
    """Whether process `pid` of this host exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def owner_is_dead(pid, host):
    """True only when `host` is this host and its process `pid` is gone (and
    is not this process): directories of other hosts are never judged."""
    return host == this_host() and pid != os.getpid() and not process_alive(pid)
