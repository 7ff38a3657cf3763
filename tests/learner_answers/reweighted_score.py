import numpy as np
import torch


def reweighted_score(features: np.ndarray, bank: np.ndarray, batch_size: int, b: int) -> np.ndarray:
    bank = torch.as_tensor(np.asarray(bank, dtype=np.float64))
    images = torch.as_tensor(np.asarray(features, dtype=np.float64)).reshape(batch_size, -1, bank.shape[1])
    scores = []
    for patches in images:
        to_bank = torch.cdist(patches, bank, compute_mode="donot_use_mm_for_euclid_dist")
        nearest, entry = to_bank.min(dim=1)
        worst = int(nearest.argmax())
        m_star = int(entry[worst])
        around = torch.linalg.vector_norm(bank - bank[m_star], dim=1)
        around[m_star] = float("inf")  # m* is not its own neighbour
        support = torch.cat([torch.tensor([m_star]), torch.topk(around, b, largest=False).indices])
        weight = 1.0 - torch.softmax(to_bank[worst, support], dim=0)[0]
        scores.append(float(weight * nearest[worst]))
    return np.array(scores)
