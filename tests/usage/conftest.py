from tests.support.partitions import past_partitions

__all__ = ["past_partitions"]
