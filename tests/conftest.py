"""Test-wide settings."""

import torch

# The networks under test are tiny: one intra-op thread is fastest, and it keeps timings
# stable when the suite shares the machine's two cores with other work.
torch.set_num_threads(1)
