"""The to_device confirmation minimum (SPEC §8.2), without Synapse."""

from synapse_syncv3.core.acks import advance_confirmation, deletable_up_to


def test_no_counting_session_deletes_nothing() -> None:
    assert deletable_up_to([]) is None


def test_a_session_that_confirmed_nothing_blocks_deletion() -> None:
    assert deletable_up_to([102, None]) is None
    assert deletable_up_to([None]) is None


def test_minimum_of_confirmations() -> None:
    assert deletable_up_to([103, 102]) == 102
    assert deletable_up_to([103]) == 103
    assert deletable_up_to(iter([5, 7, 5])) == 5


def test_confirmation_only_moves_forward() -> None:
    assert advance_confirmation(None, 101) == 101
    assert advance_confirmation(103, 102) == 103
    assert advance_confirmation(102, 103) == 103


def test_worked_example_of_spec_8_3() -> None:
    """The confirmation columns of SPEC §8.3, step by step."""
    s1: int | None = None
    s2: int | None = None
    inbox = {101, 102}

    def run_deletion() -> None:
        up_to = deletable_up_to([s1, s2])
        if up_to is not None:
            inbox.difference_update({m for m in inbox if m <= up_to})

    s1 = advance_confirmation(s1, 102)  # step 3
    run_deletion()
    assert inbox == {101, 102}
    inbox.add(103)  # step 4
    s2 = advance_confirmation(s2, 102)  # step 5
    run_deletion()
    assert inbox == {103}
    s1 = advance_confirmation(s1, 103)  # step 6
    run_deletion()
    assert inbox == {103}
    s1 = advance_confirmation(s1, 102)  # step 7: replay of T1a
    assert s1 == 103
    s2 = advance_confirmation(s2, 103)  # step 8
    run_deletion()
    assert inbox == set()
