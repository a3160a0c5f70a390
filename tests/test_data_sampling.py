"""data.sampler: balanced — class-balanced draws with replacement, seeded by (seed, epoch), used by the Trainer."""

import numpy as np
import torch
from transformers import TrainingArguments

from vit_finetune.data.sampling import BalancedSampler
from vit_finetune.modeling.config import ClassifierConfig, encoder_config_for_size
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.training.trainer import ClassifierTrainer

LABELS = np.array([0] * 950 + [1] * 50)  # 95:5


def test_every_class_is_drawn_equally_often_with_replacement():
    draws = np.concatenate([list(sampler_at(epoch)) for epoch in range(20)])  # 20 000 draws
    assert len(draws) == 20 * len(LABELS) and draws.min() >= 0 and draws.max() < len(LABELS)
    rare_share = (LABELS[draws] == 1).mean()
    assert abs(rare_share - 0.5) < 0.02  # 5 standard deviations of a binomial share over 20 000 draws
    rare_drawn = np.unique(draws[LABELS[draws] == 1])
    assert len(rare_drawn) == 50  # every minority example is drawn, each many times
    weights = sampler_at(0).weights.numpy()  # torch.multinomial's weights: 1 / class count, uniform within a class
    assert np.array_equal(weights, np.where(LABELS == 1, 1 / 50, 1 / 950))


def sampler_at(epoch: int, seed: int = 0) -> BalancedSampler:
    sampler = BalancedSampler(LABELS, seed=seed)
    sampler.set_epoch(epoch)
    return sampler


def test_draws_are_fixed_by_seed_and_epoch():
    assert list(sampler_at(3)) == list(sampler_at(3))  # a resumed epoch draws the same sequence again
    assert list(sampler_at(3)) != list(sampler_at(4))
    assert list(sampler_at(3, seed=1)) != list(sampler_at(3, seed=0))
    assert len(sampler_at(0)) == len(LABELS)


class LabelledDataset(torch.utils.data.Dataset):
    def __init__(self, labels: np.ndarray):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": torch.zeros(3, 8, 8), "labels": int(self.labels[index])}


def test_trainer_draws_balanced_batches_seeded_by_data_seed(tmp_path):
    encoder = encoder_config_for_size("cifar-tiny", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, image_size=8, patch_size=4)
    model = ImageClassifier(ClassifierConfig(encoder=encoder, pooling="mean", num_labels=2))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", seed=5, data_seed=7,
                             per_device_train_batch_size=100, dataloader_num_workers=0)
    trainer = ClassifierTrainer(model=model, args=args, train_dataset=LabelledDataset(LABELS), sampler="balanced")
    loader = trainer.get_train_dataloader()
    loader.set_epoch(2)
    labels = torch.cat([batch["labels"] for batch in loader])
    assert len(labels) == len(LABELS) and abs(labels.float().mean().item() - 0.5) < 0.06
    expected = torch.as_tensor(LABELS[list(sampler_at(2, seed=7))])
    assert torch.equal(labels, expected)  # the loader's order is the sampler's at (data_seed, epoch)
    default = ClassifierTrainer(model=model, args=args, train_dataset=LabelledDataset(LABELS))
    assert torch.cat([batch["labels"] for batch in default.get_train_dataloader()]).sum() == 50  # a permutation
