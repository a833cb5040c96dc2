"""Reading batches and drawing a class-balanced probe."""

import pytest
import torch

from lightning_xai.callbacks._probe import Probe, ProbeCollector, balanced_order
from lightning_xai.callbacks.batch import split_batch


def test_balanced_order_is_round_robin_over_sorted_labels():
    labels = torch.tensor([2, 0, 0, 2, 1, 0, 2])
    order, rank, group = balanced_order(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 2, 0, 2]
    assert order.tolist() == [1, 4, 0, 2, 3, 5, 6]
    assert rank.tolist() == [0, 0, 1, 1, 0, 2, 2]
    assert group.tolist() == [2, 0, 0, 2, 1, 0, 2]


def test_collector_keeps_memory_bounded_and_selects_the_same_as_one_pass():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=gen)
    y = torch.randint(0, 20, (500,), generator=gen)
    collector = ProbeCollector(4)
    for start in range(0, 500, 32):
        collector.add(Probe(x[start : start + 32], y[start : start + 32]))
        assert collector.count <= 16
    inputs, labels, *_ = collector.select()
    order = balanced_order(y)[0][:4]
    torch.testing.assert_close(inputs, x[order])
    assert labels.tolist() == [0, 1, 2, 3]


def test_collector_without_labels_takes_the_first_samples():
    collector = ProbeCollector(3)
    collector.add(Probe(torch.arange(2.0)[:, None]))
    collector.add(Probe(torch.arange(2.0, 6.0)[:, None], torch.zeros(4, 2)))  # not class indices: ignored
    inputs, labels, *_ = collector.select()
    assert inputs.flatten().tolist() == [0.0, 1.0, 2.0] and labels is None


def test_split_batch_structures():
    x, y = torch.zeros(2, 3), torch.tensor([1, 0])
    assert split_batch((x, y)).labels is y
    assert split_batch([x, y, "meta"], 0, None).labels is None
    assert split_batch(x).inputs is x
    assert split_batch({"a": y, "b": x}, batch_fn=lambda b: (b["b"], b["a"])).inputs is x
    masks = torch.ones(2, 1, 3)
    assert split_batch((x, y, masks), mask_key=2).masks is masks
    assert split_batch(x, batch_fn=lambda b: (b, None, masks)).masks is masks
    with pytest.raises(ValueError, match="the masks have 1 rows but the inputs 2"):
        split_batch((x, y, masks[:1]), mask_key=2)
    with pytest.raises(ValueError, match=r"tuple of 1 elements \(Tensor\); target_key=1 .* position from 0 to 0"):
        split_batch((x,))
    with pytest.raises(ValueError, match=r"input_key='img' does not select anything: set input_key to one of \['x'\]"):
        split_batch({"x": x}, "img", None)
    with pytest.raises(ValueError, match="inputs selected from a tuple of 2 elements .* are a str, not a tensor"):
        split_batch(("text", y))
    with pytest.raises(ValueError, match="the validation batch is a int; input_key=0 .* pass batch_fn"):
        split_batch(3)


class ThreadRanks:
    """A strategy stand-in whose ``all_gather`` is a real collective between threads (equal shapes or it fails)."""

    def __init__(self, rank, shared):
        self.rank, self.shared, self.root_device = rank, shared, torch.device("cpu")

    def all_gather(self, tensor):
        slots, barrier = self.shared
        slots[self.rank] = tensor
        barrier.wait()
        gathered = torch.stack([slots[0], slots[1]])
        barrier.wait()
        return gathered


def test_ranks_with_sequences_of_different_lengths_agree_on_one_padded_probe():
    import threading

    from lightning_xai.callbacks._probe import gather_probe

    pad = {"inputs.0": 9, "extras.attention_mask": 0}
    masks = torch.tensor([[1, 1], [1, 0]]), torch.ones(1, 4, dtype=torch.long)
    locals_ = [
        Probe(torch.tensor([[1, 2], [3, 9]]), torch.tensor([0, 1]), None, {"attention_mask": masks[0]}),
        Probe(torch.tensor([[4, 5, 6, 7]]), torch.tensor([1]), None, {"attention_mask": masks[1]}),
    ]
    shared, results = ({}, threading.Barrier(2)), [None, None]

    def run(rank):
        results[rank] = gather_probe(ThreadRanks(rank, shared), locals_[rank], 4, pad)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    first, second = results
    for field, value in first.fields().items():
        torch.testing.assert_close(second.fields()[field], value)  # the same probe on both ranks
    assert first.inputs.tolist() == [[1, 2, 9, 9], [4, 5, 6, 7]]  # one sample per rank (the fewest), padded
    assert first.extras["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
