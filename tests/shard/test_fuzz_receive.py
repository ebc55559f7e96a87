"""Property-based fuzzing of the receive path (frame reader + inflater + decoder) with hypothesis, for
each compression and decode mode: arbitrary and hostile payloads, framed or not, in arbitrary chunkings.
The invariants live in `receive_fuzz.Harness`; longer runs: `make fuzz` (atheris, bench/fuzz_receive.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receive_fuzz import COMPRESSIONS, KINDS, MODES, SPECIAL, dispatch, run

payloads = st.one_of(
    st.sampled_from(SPECIAL),
    st.binary(max_size=300),
    st.builds(dispatch, st.one_of(st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.none())),
    st.builds(lambda n: b'{"op":10,"d":{"heartbeat_interval":%d}}' % n, st.integers(-(2 ** 64), 2 ** 64)),
    st.builds(lambda code, reason: code.to_bytes(2, "big") + reason, st.integers(0, 65535), st.binary(max_size=4)),
)
steps = st.lists(st.tuples(st.sampled_from(KINDS), payloads, st.integers(0, 15), st.booleans(), st.integers(0, 7)),
                 max_size=12)
cuts = st.lists(st.integers(0, 1 << 20), max_size=12)
budgets = st.lists(st.integers(-1, 40), max_size=4)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_receive_path_invariants(compression: str | None, mode: str) -> None:
    @FUZZ
    @given(steps, cuts, budgets)
    def check(s: list, c: list[int], b: list[int]) -> None:
        run(compression, mode, s, c, b)

    check()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_arbitrary_bytes(compression: str | None) -> None:
    @FUZZ
    @given(st.binary(max_size=2000), cuts, budgets)
    def check(data: bytes, c: list[int], b: list[int]) -> None:
        run(compression, "eager", [("junk", data, 0, True, 0)], c, b)

    check()


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("special", range(len(SPECIAL)))
def test_each_hostile_payload(compression: str | None, special: int) -> None:
    """Every hostile payload, alone between two good dispatches, one byte at a time."""
    payload = SPECIAL[special]
    steps = [("message", dispatch(2), 0, True, 0), ("message", payload, 0, True, 0),
             ("message", dispatch(3), 0, True, 0)]
    run(compression, "eager", steps, list(range(0, 4000, 1)) if len(payload) < 3000 else [], [-1])
