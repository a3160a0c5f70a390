"""The collator's reusable batch buffers, the channels-last output and the threaded chunked path."""

import pickle

import pytest
import torch

from vit_finetune.data import fast_resize
from vit_finetune.data.collate import BufferPool, ImageCollator
from vit_finetune.data.preprocess import PreprocessConfig, empty_batch, preprocess_batch

SHAPE = (4, 3, 8, 8)


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def test_pool_reuses_a_buffer_once_the_batch_is_dropped():
    pool = BufferPool()
    first = pool.take(SHAPE)
    address = storage(first)
    del first
    assert storage(pool.take(SHAPE)) == address


@pytest.mark.parametrize("holder", ["name", "slice", "autograd"])
def test_pool_never_hands_out_a_buffer_that_is_still_referenced(holder):
    pool = BufferPool()
    batch = pool.take(SHAPE)
    address = storage(batch)
    if holder == "name":
        kept = {"pixel_values": batch}
    elif holder == "slice":
        kept = batch[1:]
    else:  # the patch-embedding conv saves its input for the weight gradient
        weight = torch.nn.Parameter(torch.randn(2, 3, 4, 4))
        kept = torch.nn.functional.conv2d(batch, weight, stride=4).sum()
    del batch
    second = pool.take(SHAPE)
    assert storage(second) != address
    del second
    if holder == "autograd":
        kept.backward()
    del kept
    assert storage(pool.take(SHAPE)) == address


def test_pool_never_reuses_shared_memory_and_pickles_empty():
    pool = BufferPool()
    batch = pool.take(SHAPE)
    batch.share_memory_()  # what sending it from a DataLoader worker does
    address = storage(batch)
    del batch
    assert storage(pool.take(SHAPE)) != address
    assert pickle.loads(pickle.dumps(pool)).buffers == []


@pytest.mark.parametrize("capacity", [2, 4])
def test_pool_keeps_at_most_capacity_buffers(capacity):
    pool = BufferPool(capacity=capacity)
    held = [pool.take(SHAPE) for _ in range(5)]
    assert len(pool.buffers) == capacity and len({storage(b) for b in held}) == 5


def test_collator_batches_are_channels_last_and_stay_valid_while_held():
    examples = [{"pixels": torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), "labels": i} for i in range(4)]
    collate = ImageCollator(PreprocessConfig(height=32, width=32))
    first = collate(examples)["pixel_values"]
    expected = first.clone()
    other = [{"pixels": torch.zeros(3, 16, 16, dtype=torch.uint8), "labels": 0}] * 4
    collate(other), collate(other)  # would overwrite `first` if the pool ignored the live reference
    assert torch.equal(first, expected)
    assert first.is_contiguous(memory_format=torch.channels_last)


def test_preprocess_batch_out_must_be_a_matching_batch():
    pixels = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    cfg = PreprocessConfig(height=8, width=8)
    out = empty_batch((2, 3, 8, 8))
    assert preprocess_batch(pixels, cfg, out=out) is out
    with pytest.raises(ValueError, match="out must be"):
        preprocess_batch(pixels, cfg, out=torch.empty(2, 3, 8, 8))  # NCHW, not channels last
    with pytest.raises(ValueError, match="out must be"):
        preprocess_batch(pixels, cfg, out=empty_batch((3, 3, 8, 8)))


def test_threaded_chunks_equal_one_thread_and_work_in_inference_mode(monkeypatch):
    monkeypatch.setattr(fast_resize, "CHUNK_BYTES", 4 * 3 * 56 * 56 * 3)  # 3 images per chunk: 4 chunks of 11 images
    pixels = torch.randint(0, 256, (11, 3, 20, 24), dtype=torch.uint8)
    cfg = PreprocessConfig(height=56, width=56, image_mean=(0.1, 0.2, 0.3), image_std=(0.3, 0.2, 0.1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = preprocess_batch(pixels, cfg)
        torch.set_num_threads(2)
        threaded = preprocess_batch(pixels, cfg)
        with torch.inference_mode():
            in_inference = preprocess_batch(pixels, cfg)
    finally:
        torch.set_num_threads(threads)
    assert fast_resize.applies(pixels, cfg)
    assert torch.equal(single, threaded) and torch.equal(single, in_inference)
    assert torch.equal(single, preprocess_batch(pixels, cfg, tuned=False))  # the plain definition, bitwise
    assert torch.equal(single, torch.cat([preprocess_batch(image[None], cfg) for image in pixels]))  # as predicted
    mean, std = torch.tensor(cfg.image_mean).view(1, 3, 1, 1), torch.tensor(cfg.image_std).view(1, 3, 1, 1)
    resized = torch.nn.functional.interpolate(pixels, size=(56, 56), mode="bilinear", antialias=True).float()
    assert torch.allclose(single, (resized / 255 - mean) / std, atol=1e-5)


def test_whole_factor_route_threads_and_modes_agree():
    """Two threads, one thread, inference mode and one image at a time give the same bits; a thread's
    scratch made during inference mode still takes training-mode writes afterwards."""
    import threading

    pixels = torch.randint(0, 256, (11, 3, 8, 24), dtype=torch.uint8)
    cfg = PreprocessConfig(height=56, width=56)  # 8 -> 56 rows: 7x
    assert fast_resize.row_stretch_factor(cfg, 8, 24) == 7
    results = {}

    def run() -> None:  # a fresh thread: its scratch is first made inside inference mode
        with torch.inference_mode():
            results["inference"] = preprocess_batch(pixels, cfg)
        torch.set_num_threads(1)
        results["single"] = preprocess_batch(pixels, cfg)

    threads = torch.get_num_threads()
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        torch.set_num_threads(2)
        threaded = preprocess_batch(pixels, cfg)
    finally:
        torch.set_num_threads(threads)
    assert set(results) == {"inference", "single"}
    assert torch.equal(results["single"], threaded) and torch.equal(results["inference"], threaded)
    one_by_one = torch.cat([preprocess_batch(image[None], cfg) for image in pixels])
    assert torch.equal(one_by_one, threaded)


def test_dataloader_workers_give_the_main_process_batches():
    examples = [{"pixels": torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), "labels": i % 3} for i in range(24)]
    collate = ImageCollator(PreprocessConfig(height=16, width=16))
    main = [b["pixel_values"].clone() for b in torch.utils.data.DataLoader(examples, batch_size=4, collate_fn=collate)]
    loader = torch.utils.data.DataLoader(examples, batch_size=4, collate_fn=collate, num_workers=2)
    workers = [b["pixel_values"] for b in loader]  # held: each must stay intact while later ones arrive
    assert all(torch.equal(a, b) for a, b in zip(main, workers)) and len(workers) == 6


def _two_threads(_worker_id: int) -> None:
    torch.set_num_threads(2)  # DataLoader workers start with one thread: give this one a chunk pool


def test_forked_workers_make_their_own_chunk_threads(monkeypatch):
    monkeypatch.setattr(fast_resize, "CHUNK_BYTES", 4 * 3 * 16 * 16 * 2)  # 2 images per chunk: the pool runs
    examples = [{"pixels": torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), "labels": 0} for _ in range(12)]
    collate = ImageCollator(PreprocessConfig(height=16, width=16))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        main = [collate(examples[i : i + 4])["pixel_values"].clone() for i in range(0, 12, 4)]  # parent's pool exists
        assert fast_resize._chunk_threads is not None
        loader = torch.utils.data.DataLoader(examples, batch_size=4, collate_fn=collate, num_workers=1, timeout=60,
                                             worker_init_fn=_two_threads, multiprocessing_context="fork")
        workers = [batch["pixel_values"] for batch in loader]  # a child using the parent's threadless pool would hang
    finally:
        torch.set_num_threads(threads)
    assert len(workers) == 3 and all(torch.equal(a, b) for a, b in zip(main, workers))
