"""Value inference: the value model's expected value of every frame of a mixture member, in reader order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tau_data.mixture import MixtureDataset
from tau_models import SampleTokenizer, ValueModel
from tqdm import tqdm


@torch.no_grad()
def predict_values(model: ValueModel, mixture: MixtureDataset, member: int, batch_size: int) -> np.ndarray:
    """The value model's expected value of every frame of one mixture member, in reader order."""
    model.eval()
    rows = _MemberRows(mixture, member, SampleTokenizer(model.config))
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=False)
    values = [model.predict_value(batch).cpu().numpy() for batch in tqdm(loader, desc=f"values {member}",
                                                                         unit="batch", leave=False)]
    return np.concatenate(values).astype(np.float64)


class _MemberRows(torch.utils.data.Dataset):
    """The frames of one mixture member in reader order, tokenized for the value model."""

    def __init__(self, mixture: MixtureDataset, member: int, tokenize: SampleTokenizer) -> None:
        self.mixture, self.member, self.tokenize = mixture, member, tokenize

    def __len__(self) -> int:
        return len(self.mixture.members[self.member])

    def __getitem__(self, row: int) -> dict[str, Any]:
        sample = self.mixture[(self.member, row)]
        return self.tokenize({"images": sample["images"], "image_mask": sample["image_mask"],
                              "state": sample["state"], "prompt": sample["prompt"]})
