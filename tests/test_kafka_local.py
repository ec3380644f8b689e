"""The local broker's storage formatting must accept every cluster id it generates."""

import base64

from stockmax.kafka_local import new_cluster_id


def test_cluster_ids_never_look_like_an_option():
    ids = [new_cluster_id() for _ in range(5000)]  # ~78 would start with '-' without the redraw
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
