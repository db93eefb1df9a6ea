"""What the CPU of this machine offers that decides a training switch's speed."""

import functools

_CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=1)
def has_bfloat16_instructions():
    """True if the CPU has bfloat16 product instructions (x86 `avx512_bf16`
    or `amx_bf16`, Arm `bf16`), False if it has none, None where the
    system does not say (no readable `/proc/cpuinfo` flags)."""
    try:
        with open(_CPUINFO) as handle:
            text = handle.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
