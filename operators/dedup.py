"""Drops a tick that repeats an already-seen (exchange, seq) of its symbol."""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from itertools import islice
from typing import Iterable, Sequence

from .snapshot import Snapshotted, column, column_bytes

# Released keys per sealed chunk. The open tail, at most this many keys, is all a symbol's snapshot has to
# write again each time its state changes; a sealed chunk is written once (operators/stored.py).
SEAL_KEYS = 64


class DuplicateFilter(Snapshotted):
    """Remembers each accepted tick's (exchange, seq) until the event-time frontier is `horizon_us` past
    it. A repeat within that memory is a duplicate; an older repeat is behind the watermark, so it is late
    and is not applied either. The horizon keeps memory proportional to recent ticks, not to history.

    Two steps, because the one per tick must touch little: a symbol's ticks come one at a time among those
    of thousands of other symbols, so every object a tick touches is a cache miss. `claim` adds the key
    when its tick is accepted. `remember_released` says when to forget keys, for many ticks at once, when
    they are released in event-time order: a queue of three columns (event time ascending), forgotten from
    its head by a binary search. Released ticks that come before the queued ones (not expected: releases
    follow the frontier) go to a heap instead. Keys claimed and not yet released belong to ticks their
    owner still buffers: they are not in the snapshot, the owner claims them again on restore
    (SymbolProcessor.restore).

    The queue is sealed chunks of `seal_keys` keys, never changed once sealed (forgetting moves an offset
    into the first), then an open tail. So a snapshot can leave the sealed chunks out and name them
    (`snapshot(external=True)`): the job writes each chunk once, on its own, and drops it when it has been
    forgotten (`take_changes`), and a restored filter gets them back with `attach`."""

    __slots__ = ("horizon_us", "seal_keys", "_seen", "_chunks", "_first_head", "_times", "_exchanges", "_seqs",
                 "_head", "_out_of_order", "_next_chunk", "_sealed", "_dropped", "_missing")

    def __init__(self, horizon_us: int, seal_keys: int | None = None) -> None:
        self.horizon_us = horizon_us
        self.seal_keys = SEAL_KEYS if seal_keys is None else seal_keys
        # exchange -> the seqs seen on it: plain ints in a set, not a tuple per key. A tuple is an object the
        # garbage collector tracks until a collection first looks at it, and with a horizon's worth of them
        # alive (~1 M at 20 k ticks/s) and as many dying each second, collections came rarely and each walked
        # all of them (~1 s with the worker stopped).
        self._seen: dict[str, set[int]] = {}
        self._chunks: list[list] = []  # [chunk id, times, exchanges, seqs]; contents None until attached
        self._first_head = 0  # keys of the first chunk before this are forgotten
        self._times = array("q")  # the open tail, ascending from _head (which moves only with no chunk left)
        self._exchanges: list[str] = []
        self._seqs = array("q")
        self._head = 0
        self._out_of_order: list[tuple[int, str, int]] = []  # heap of (event time, exchange, seq)
        self._next_chunk = 0
        self._sealed: list[list] = []  # sealed since take_changes
        self._dropped: list[int] = []  # chunk ids forgotten since take_changes
        self._missing = 0  # chunks restored by name and not yet attached

    def seen(self, exchange: str, seq: int) -> bool:
        seqs = self._seen.get(exchange)
        return seqs is not None and seq in seqs

    def claim(self, exchange: str, seq: int) -> None:
        """Seen from now on, until remember_released has said when to forget it."""
        seqs = self._seen.get(exchange)
        if seqs is None:
            seqs = self._seen[exchange] = set()
        seqs.add(seq)

    def claim_all(self, keys: Iterable[tuple[str, int]]) -> None:
        for exchange, seq in keys:
            self.claim(exchange, seq)

    def _claim_run(self, exchanges: Sequence[str], seqs: Iterable[int]) -> None:
        """Claim a run of keys; one set update when they share one exchange (a symbol's usual case)."""
        if exchanges and exchanges.count(exchanges[0]) == len(exchanges):
            seen = self._seen.get(exchanges[0])
            if seen is None:
                seen = self._seen[exchanges[0]] = set()
            seen.update(seqs)
        else:
            self.claim_all(zip(exchanges, seqs))

    def _unclaim(self, exchange: str, seq: int) -> None:
        seqs = self._seen.get(exchange)
        if seqs is not None:
            seqs.discard(seq)

    def _unclaim_run(self, exchanges: Sequence[str], seqs: Iterable[int]) -> None:
        """_claim_run's inverse."""
        if exchanges and exchanges.count(exchanges[0]) == len(exchanges):
            seen = self._seen.get(exchanges[0])
            if seen is not None:
                seen.difference_update(seqs)
        else:
            for exchange, seq in zip(exchanges, seqs):
                self._unclaim(exchange, seq)

    def remember_released(self, exchanges: Sequence[str], seqs: Sequence[int], times: Sequence[int]) -> None:
        """Forget these claimed keys once the frontier is horizon_us past their event times (ascending)."""
        if not times:
            return
        tail = self._times
        if len(tail) > self._head:
            last = tail[-1]
        elif self._chunks:
            last = self._chunks[-1][1][-1]
        else:
            last = None
        if last is None or last <= times[0]:
            tail.extend(times)
            self._exchanges.extend(exchanges)
            self._seqs.extend(seqs)
            if len(tail) - self._head >= self.seal_keys:
                self._seal()
        else:
            for entry in zip(times, exchanges, seqs):
                heapq.heappush(self._out_of_order, entry)

    def _seal(self) -> None:
        head = self._head  # above 0 only when no chunk is left, so the tail's rest becomes the first chunk
        chunk = [self._next_chunk, self._times[head:], self._exchanges[head:], self._seqs[head:]]
        if not self._chunks:
            self._first_head = 0
        self._chunks.append(chunk)
        self._sealed.append(chunk)
        self._next_chunk += 1
        self._times, self._exchanges, self._seqs, self._head = array("q"), [], array("q"), 0

    def forget_before(self, frontier_us: int) -> None:
        if self._missing:
            raise RuntimeError("a duplicate filter restored by name needs its sealed chunks attached first")
        cutoff = frontier_us - self.horizon_us
        chunks = self._chunks
        while chunks:
            chunk_id, times, exchanges, seqs = chunks[0]
            if times[-1] >= cutoff:  # this chunk outlives the cutoff, and so does all after it
                self._first_head = self._forget(times, exchanges, seqs, self._first_head, cutoff)
                break
            self._forget(times, exchanges, seqs, self._first_head, cutoff)
            del chunks[0]
            self._first_head = 0
            sealed = self._sealed
            if sealed and sealed[0][0] == chunk_id:  # never handed out: nothing to remove
                del sealed[0]
            else:
                self._dropped.append(chunk_id)
        else:
            times = self._times
            end = self._head = self._forget(times, self._exchanges, self._seqs, self._head, cutoff)
            if end > 64 and end * 2 > len(times):  # compact now and then: amortised O(1)
                del times[:end], self._exchanges[:end], self._seqs[:end]
                self._head = 0
        out_of_order = self._out_of_order
        while out_of_order and out_of_order[0][0] < cutoff:
            _, exchange, seq = heapq.heappop(out_of_order)
            self._unclaim(exchange, seq)

    def _forget(self, times: array, exchanges: list[str], seqs: array, head: int, cutoff: int) -> int:
        """Forget the queued keys of one run (a chunk or the tail) from `head` with times before `cutoff`;
        the index of the first one kept."""
        if head == len(times) or times[head] >= cutoff:
            return head
        end = bisect_left(times, cutoff, head)
        self._unclaim_run(exchanges[head:end], seqs[head:end])
        return end

    def __len__(self) -> int:
        return sum(map(len, self._seen.values()))

    def take_changes(self) -> tuple[list[tuple[int, tuple]], list[int]]:
        """Since the last call: the chunks sealed, as (chunk id, contents for `attach`), and the ids of
        the chunks forgotten (a chunk sealed and forgotten in between is in neither)."""
        sealed, dropped = [(chunk[0], tuple(chunk[1:])) for chunk in self._sealed], self._dropped
        self._sealed, self._dropped = [], []
        return sealed, dropped

    @property
    def missing_chunks(self) -> list[int]:
        """The sealed chunks a restore named and `attach` has not filled yet."""
        return [chunk[0] for chunk in self._chunks if chunk[1] is None] if self._missing else []

    def attach(self, chunk_id: int, contents: tuple) -> None:
        """A sealed chunk's contents (as take_changes handed them out), for a filter restored by name."""
        if contents is None:
            raise RuntimeError(f"sealed duplicate-filter chunk {chunk_id} is missing from the state")
        for index, chunk in enumerate(self._chunks):
            if chunk[0] == chunk_id and chunk[1] is None:
                chunk[1:] = contents
                head = self._first_head if index == 0 else 0
                self._claim_run(contents[1][head:], islice(contents[2], head, None))
                self._missing -= 1
                return
        raise KeyError(f"no sealed chunk {chunk_id} waits to be attached")

    def snapshot(self, external: bool = False) -> tuple:
        """Plain data; with external=True the sealed chunks are named, not included (take_changes hands
        them out once). The set is the keys of the queue and the heap (and the claimed ones, see above):
        not kept."""
        head, first_head = self._head, self._first_head
        chunks = [(chunk_id, first_head if index == 0 else 0,
                   *((None,) * 3 if external or times is None
                     else (column_bytes(times), exchanges, column_bytes(seqs))))
                  for index, (chunk_id, times, exchanges, seqs) in enumerate(self._chunks)]
        return (self.horizon_us, self.seal_keys, chunks, column_bytes(self._times, head), self._exchanges[head:],
                column_bytes(self._seqs, head), self._out_of_order, self._next_chunk)

    @classmethod
    def restore(cls, data: tuple) -> "DuplicateFilter":
        horizon_us, seal_keys, chunks, times, exchanges, seqs, out_of_order, next_chunk = data
        dups = cls(horizon_us, seal_keys)
        times, seqs = column("q", times), column("q", seqs)
        dups._times, dups._exchanges, dups._seqs, dups._out_of_order = times, exchanges, seqs, out_of_order
        dups._next_chunk = next_chunk
        dups._claim_run(exchanges, seqs)
        dups.claim_all((exchange, seq) for _, exchange, seq in out_of_order)
        for chunk_id, head, chunk_times, chunk_exchanges, chunk_seqs in chunks:
            if chunk_times is not None:
                chunk_times, chunk_seqs = column("q", chunk_times), column("q", chunk_seqs)
            dups._chunks.append([chunk_id, chunk_times, chunk_exchanges, chunk_seqs])
            if chunk_times is None:
                dups._missing += 1
            else:  # a whole snapshot: as far as this filter knows, its chunks are stored nowhere else
                dups._sealed.append(dups._chunks[-1])
                dups._claim_run(chunk_exchanges[head:], islice(chunk_seqs, head, None))
        dups._first_head = chunks[0][1] if chunks else 0
        return dups
