"""The Light-ASD network (Liao et al., CVPR 2023; github.com/Junhua-Liao/Light-ASD, MIT),
written from its published architecture so that its released state dicts load as they are
(keys `model.*` and `lossAV.FC.*`; module names below follow them).

Visual encoder: three blocks of split (2+1)D convolutions on grey 112x112 face crops at
25 fps, each block two branches (1xkxk spatial then kx1x1 temporal, k = 3 and 5) summed and
mixed by a 1x1x1 convolution; max-pooled to one 128-d vector per frame. Audio encoder:
the same design in 2D on 13-d MFCCs at 100 fps (kx1 over coefficients, 1xk over time), time
pooled by 4 to the video rate, averaged over coefficients. The two are summed and read by a
forward GRU then a backward GRU (GELU after each); a linear layer gives two logits per
frame, of which upstream scores the second (speaking > 0). BatchNorm eps is 0.001 throughout.
"""

from __future__ import annotations

import torch
from torch import nn

_BN = dict(momentum=0.01, eps=0.001)


class AudioBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.m_3 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = nn.BatchNorm2d(cout, **_BN)
        self.t_3 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = nn.BatchNorm2d(cout, **_BN)
        self.m_5 = nn.Conv2d(cin, cout, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = nn.BatchNorm2d(cout, **_BN)
        self.t_5 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = nn.BatchNorm2d(cout, **_BN)
        self.last = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_last = nn.BatchNorm2d(cout, **_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        x3 = r(self.bn_t_3(self.t_3(r(self.bn_m_3(self.m_3(x))))))
        x5 = r(self.bn_t_5(self.t_5(r(self.bn_m_5(self.m_5(x))))))
        return r(self.bn_last(self.last(x3 + x5)))


class VisualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool = False) -> None:
        super().__init__()
        stride = (1, 2, 2) if down else 1
        self.relu = nn.ReLU()
        self.s_3 = nn.Conv3d(cin, cout, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)
        self.bn_s_3 = nn.BatchNorm3d(cout, **_BN)
        self.t_3 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = nn.BatchNorm3d(cout, **_BN)
        self.s_5 = nn.Conv3d(cin, cout, (1, 5, 5), stride=stride, padding=(0, 2, 2), bias=False)
        self.bn_s_5 = nn.BatchNorm3d(cout, **_BN)
        self.t_5 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = nn.BatchNorm3d(cout, **_BN)
        self.last = nn.Conv3d(cout, cout, 1, bias=False)
        self.bn_last = nn.BatchNorm3d(cout, **_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        x3 = r(self.bn_t_3(self.t_3(r(self.bn_s_3(self.s_3(x))))))
        x5 = r(self.bn_t_5(self.t_5(r(self.bn_s_5(self.s_5(x))))))
        return r(self.bn_last(self.last(x3 + x5)))


class VisualEncoder(nn.Module):
    """(B, 1, T, 112, 112) normalised grey crops → (B, T, 128)."""

    # Frames of temporal context each side that change a frame's output: kernel 5 → 2 per block.
    CONTEXT = 6

    def __init__(self) -> None:
        super().__init__()
        self.block1 = VisualBlock(1, 32, down=True)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block2 = VisualBlock(32, 64)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block3 = VisualBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.amax(dim=(3, 4)).transpose(1, 2)  # (B, T, C): max over the face


class AudioEncoder(nn.Module):
    """(B, 1, 13, 4T) MFCCs → (B, T, 128)."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = AudioBlock(1, 32)
        self.pool1 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block2 = AudioBlock(32, 64)
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block3 = AudioBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.mean(dim=2).transpose(1, 2)  # (B, T, C): mean over the coefficients


class BGRU(nn.Module):
    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, batch_first=True)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.gru_forward(x)[0])
        x = self.gru_backward(torch.flip(x, dims=[1]))[0]
        return self.gelu(torch.flip(x, dims=[1]))


class LightASD(nn.Module):
    """Light-ASD's `ASD_Model` plus its audio-visual classifier (`lossAV.FC`)."""

    MEAN, STD = 0.4161, 0.1688  # of grey crops scaled to [0, 1]

    def __init__(self) -> None:
        super().__init__()
        self.visualEncoder = VisualEncoder()
        self.audioEncoder = AudioEncoder()
        self.GRU = BGRU(128)
        self.fc = nn.Linear(128, 2)

    def visual(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) uint8 grey crops → (B, T, 128)."""
        x = (crops.float() / 255 - self.MEAN) / self.STD
        return self.visualEncoder(x.unsqueeze(1))

    def audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) MFCCs → (B, T, 128)."""
        return self.audioEncoder(mfcc.unsqueeze(1).transpose(2, 3))

    def logits(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) embeddings of both → (B, T) speaking logits."""
        return self.fc(self.GRU(audio + visual))[..., 1]

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "LightASD":
        """From an upstream checkpoint (`model.*`, `lossAV.FC.*`; the visual-only head
        `lossV.*` is used in training only)."""
        net = cls()
        mine = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        mine.update({k.replace("lossAV.FC.", "fc."): v for k, v in state.items() if k.startswith("lossAV.FC.")})
        net.load_state_dict(mine, strict=True)
        return net.eval()


class _Part(nn.Module):
    """One part of a LightASD network as a module of its own: what is exported to ONNX."""

    def __init__(self, net: LightASD) -> None:
        super().__init__()
        self.net = net


class VisualFrontend(_Part):
    """`LightASD.visual` alone, (B, T, 112, 112) uint8 → (B, T, 128)."""

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net.visual(crops)


class AudioFrontend(_Part):
    """`LightASD.audio` alone, (B, 4T, 13) MFCCs → (B, T, 128)."""

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.net.audio(mfcc)


class Classifier(_Part):
    """`LightASD.logits` alone: (B, T, 128) audio and visual embeddings → (B, T) logits."""

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.net.logits(audio, visual)
