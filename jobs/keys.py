"""The keyed step's keys: one per ticks partition, picked so that partitions spread evenly over subtasks."""

from __future__ import annotations

import itertools

from pyflink.java_gateway import get_gateway

# Key groups of the keyed step: Flink's default up to parallelism 85, set explicitly so that the keys that
# partition_keys picks stay where they were picked for.
MAX_PARALLELISM = 128


def partition_keys(partitions: int, max_parallelism: int = MAX_PARALLELISM) -> tuple[int, ...]:
    """The keyed step's key for each ticks partition, picked so that with as many subtasks as partitions,
    partition p's key lands on subtask p (with fewer subtasks, each gets an even share of whole ranges).
    Flink hashes a key to a key group and gives each subtask a range of key groups; keys 0..n-1 land where
    the hash puts them: at parallelism 2, keys 0 and 1 both land on subtask 1, and one subtask would do all
    the work. Where a key lands is asked of Flink's own assignment, in the JVM."""
    assign = get_gateway().jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    subtasks = min(partitions, max_parallelism)
    keys: list[int] = []
    for partition in range(partitions):
        # The partition's own number first: the key it had before keys were picked, where that one lands
        # right (state in older checkpoints is under it).
        keys.append(next(key for key in itertools.chain([partition], itertools.count()) if key not in keys
                         and assign(key, max_parallelism, subtasks) == partition % subtasks))
    return tuple(keys)
