"""Coverage-guided fuzzing of the shard's receive path with atheris (the longer companion of
tests/shard/test_fuzz_receive.py, which runs the same harness under hypothesis in the test suite).

    make fuzz                                              # installs .[fuzz], runs for FUZZ_SECONDS (120)
    .venv/bin/python bench/fuzz_receive.py -max_total_time=60 -rss_limit_mb=1024
    .venv/bin/python bench/fuzz_receive.py crash-<hash>     # replay one input libFuzzer saved

Each input picks a compression (zlib-stream, zstd-stream, none) and a decode mode (eager, raw, filtered),
then a list of steps (a compressed message, a message split in two, a fragmented message, a bare frame
with any opcode/FIN/RSV bits, or bytes that are not even a frame; the payload is fuzzer bytes or one of
the known hostile payloads: deep JSON, bad sequence numbers, Hello intervals, a decompression bomb, ...),
cut into chunks at fuzzer-chosen points and processed with fuzzer-chosen budgets. The invariants
(`tests/shard/receive_fuzz.py`): nothing escapes but GatewayError, memory within max_message_size and
max_inflated_size, the sequence in 0..2**63-1 and never backwards. A failure is an uncaught exception:
libFuzzer saves the input as crash-<hash> and stops.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "shard"))

try:
    import atheris
except ImportError:  # pragma: no cover - optional extra
    sys.exit('bench/fuzz_receive.py needs atheris: pip install -e ".[fuzz]" (or make fuzz)')

with atheris.instrument_imports(include=["shard"]):
    import shard  # noqa: F401

from receive_fuzz import COMPRESSIONS, KINDS, MODES, SPECIAL, run  # noqa: E402


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    compression = COMPRESSIONS[fdp.ConsumeIntInRange(0, len(COMPRESSIONS) - 1)]
    mode = MODES[fdp.ConsumeIntInRange(0, len(MODES) - 1)]
    steps = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        kind = KINDS[fdp.ConsumeIntInRange(0, len(KINDS) - 1)]
        if fdp.ConsumeBool():
            payload = SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)]
        else:
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        steps.append((kind, payload, fdp.ConsumeIntInRange(0, 15), fdp.ConsumeBool(), fdp.ConsumeIntInRange(0, 7)))
    cuts = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    budgets = [fdp.ConsumeIntInRange(-1, 40) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    run(compression, mode, steps, cuts, budgets)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
