"""Shard identifiers and the consecutive-bucket helper."""

from __future__ import annotations

from typing import ClassVar

import msgspec

__all__ = ["ShardId", "bucket"]


class ShardId(msgspec.Struct, frozen=True, array_like=True, order=True):
    """A shard's `number` out of `total`; serialises as `[number, total]` like Identify's `shard` field."""

    number: int
    total: int

    ONE: ClassVar[ShardId]

    def __post_init__(self) -> None:
        if not 0 <= self.number < self.total:
            raise ValueError(f"shard number {self.number} must be in 0..{self.total - 1}")

    @classmethod
    def new_checked(cls, number: int, total: int) -> ShardId | None:
        """`ShardId(number, total)`, or None when `number >= total`."""
        if 0 <= number < total:
            return cls(number, total)
        return None

    def __str__(self) -> str:
        return f"[{self.number}, {self.total}]"


ShardId.ONE = ShardId(0, 1)


def bucket(bucket_id: int, buckets: int, total: int) -> list[ShardId]:
    """The consecutive ShardIds of bucket `bucket_id` when `total` shards are split into `buckets` groups.

    The first `total % buckets` buckets get one extra shard: 25 shards over 2 buckets gives 13 + 12.
    """
    if buckets < 1 or not 0 <= bucket_id < buckets:
        raise ValueError(f"bucket_id {bucket_id} must be in 0..{buckets - 1}")
    if total < 1:
        raise ValueError("total must be at least 1")
    base, extra = divmod(total, buckets)
    start = bucket_id * base + min(bucket_id, extra)
    size = base + (1 if bucket_id < extra else 0)
    return [ShardId(n, total) for n in range(start, start + size)]
