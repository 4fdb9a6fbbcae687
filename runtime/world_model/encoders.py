"""Per-modality encoders and their fusion into the tick input u_t (issue 5, item 1).

- vision: strided convs and a spatial softmax (keypoints) on 64x64 RGB (other sizes are resized);
- audio: log-mel features of the tick's audio chunks (16 kHz, up to MAX_CHUNKS of 160 samples), a small conv
  over time, pooled over the chunks present;
- proprioception: the standardized reading beside MLP features of it; action: an MLP.
Each modality gives a token; an absent, stale or non-finite one is replaced by that modality's learned mask
embedding (so a tick with everything masked still gives a finite u_t). The tokens are fused by a linear map.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16_000
CHUNK = 160  # samples per 10 ms audio chunk
N_FFT, HOP, N_MELS = 256, 80, 32  # 16 ms windows every 5 ms: two frames per chunk


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(rate / 2), n_mels + 2))
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    bank = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        bank[m] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return bank


class VisionEncoder(nn.Module):
    """Strided convs, then a spatial softmax: each of K keypoint maps becomes the expected (x, y) image
    position of its activation (Levine et al. 2016; robomimic's and LeRobot's image encoders use it). On a
    fixed camera, image positions are close to affine in table positions, so where things are (the cube, the
    gripper) reaches the latent almost linearly. A mean-pooled feature vector carries what is not a
    position."""

    def __init__(self, d: int, size: int = 64, channels: tuple[int, ...] = (16, 32), keypoints: int = 16):
        super().__init__()
        self.size = size
        widths = (3, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(widths, widths[1:], strict=False))
        self.keypoints = nn.Conv2d(widths[-1], keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        side = size // 2 ** len(channels)
        grid = torch.linspace(-1.0, 1.0, side)
        self.register_buffer("xs", grid.repeat(side), persistent=False)  # (side * side,) row-major
        self.register_buffer("ys", grid.repeat_interleave(side), persistent=False)
        self.head = nn.Linear(2 * keypoints + widths[-1], d)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, H, W, 3) uint8 or float in [0, 1] -> (B, d)."""
        x = image.permute(0, 3, 1, 2).float()
        x = x / 255.0 if image.dtype == torch.uint8 else x
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        for conv in self.convs:
            x = F.silu(conv(x))
        attention = torch.softmax(self.keypoints(x).flatten(2) * torch.exp(self.log_temperature), -1)
        points = torch.cat((attention @ self.xs, attention @ self.ys), -1)  # (B, 2K)
        return self.head(torch.cat((points, x.mean((-1, -2))), -1))


class AudioEncoder(nn.Module):
    def __init__(self, d: int, max_chunks: int):
        super().__init__()
        self.register_buffer("mel", torch.tensor(mel_filterbank().T, dtype=torch.float32), persistent=False)
        self.register_buffer("dft", windowed_dft(N_FFT), persistent=False)
        self.conv = nn.Conv1d(N_MELS, 64, 3, padding=1)
        self.head = nn.Linear(64, d)
        self.max_chunks = max_chunks
        starts = torch.arange(0, max_chunks * CHUNK + 1, HOP)  # centred frames of the padded signal
        self.register_buffer("frame_index", starts[:, None] + torch.arange(N_FFT), persistent=False)

    def log_mel(self, signal: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, N_MELS, frames): Hann-windowed power spectra every HOP samples, centred frames
        (reflect-padded, as torch.stft(center=True)), on the mel bank. One matmul for all frames' DFTs."""
        padded = F.pad(signal[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0]
        if signal.shape[-1] == self.max_chunks * CHUNK:  # the frames by a fixed index: ONNX has no unfold
            frames = padded[:, self.frame_index]
        else:
            frames = padded.unfold(-1, N_FFT, HOP)
        spec = frames @ self.dft  # (B, frames, 2 * bins): real, imaginary
        bins = N_FFT // 2 + 1
        power = spec[..., :bins].square() + spec[..., bins:].square()
        return torch.log(power @ self.mel + 1e-6).transpose(1, 2)

    def forward(self, audio: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """audio (B, C, 160), chunks (B,) present -> (B, d); frames past the chunks present are ignored."""
        h = F.silu(self.conv(self.log_mel(audio.reshape(audio.shape[0], -1))))
        frames = h.shape[-1]
        valid = torch.arange(frames, device=audio.device)[None] < (chunks[:, None] * CHUNK / HOP).clamp(min=1)
        valid = valid.to(h.dtype)
        return self.head((h * valid[:, None]).sum(-1) / valid.sum(-1, keepdim=True))


def windowed_dft(n: int) -> torch.Tensor:
    """(n, 2 * (n // 2 + 1)): x @ W gives the real and imaginary parts of the Hann-windowed DFT of x."""
    t = np.arange(n)[:, None]
    f = np.arange(n // 2 + 1)[None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann, as torch.hann_window
    angle = 2 * np.pi * t * f / n
    return torch.tensor(np.hstack((np.cos(angle), -np.sin(angle))) * window[:, None], dtype=torch.float32)


class VectorEncoder(nn.Module):
    def __init__(self, d_in: int, d: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProprioEncoder(nn.Module):
    """Proprioception -> token: the standardized reading itself, then MLP features of it. The reading's own
    coordinates stay in the token as they are (robomimic hands low-dimensional observations to its policies
    unencoded), so the objective's reading of this token from q asks q for the joints and the tool position
    themselves, not for whatever an MLP made of them. Mean and scale come from the training data
    (`standardize`) and are saved with the weights."""

    def __init__(self, d_in: int, d: int):
        super().__init__()
        if d <= d_in:
            raise ValueError(f"the proprioception token ({d}) must be wider than the reading ({d_in})")
        self.net = nn.Sequential(nn.Linear(d_in, 2 * d), nn.SiLU(), nn.Linear(2 * d, d - d_in))
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))

    @torch.no_grad()
    def standardize(self, readings: np.ndarray) -> None:
        """Mean and scale from (N, d_in) readings; a coordinate that never moves keeps scale 1."""
        std = readings.std(0)
        self.mean.copy_(torch.as_tensor(readings.mean(0), dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.scale
        return torch.cat((x, self.net(x)), -1)


class TickEncoder(nn.Module):
    """Tick arrays -> u_t (B, d_model). Modalities in order: camera, audio, joint, action (data.STREAMS)."""

    def __init__(
        self,
        d_model: int,
        d_token: int = 64,
        joint_dim: int = 13,
        action_dim: int = 5,
        max_chunks: int = 6,
        channels: tuple[int, ...] = (16, 32),
        keypoints: int = 16,
    ):
        super().__init__()
        self.vision = VisionEncoder(d_token, channels=channels, keypoints=keypoints)
        self.audio = AudioEncoder(d_token, max_chunks)
        self.joint = ProprioEncoder(joint_dim, d_token)
        self.action = VectorEncoder(action_dim, d_token)
        self.mask_tokens = nn.Parameter(torch.randn(4, d_token) / math.sqrt(d_token))
        self.fuse = nn.Linear(4 * d_token, d_model)

    def forward(self, image, audio, chunks, joint, action, mask):
        """image (B, S, S, 3); audio (B, C, 160); chunks (B,); joint (B, 13); action (B, 5); mask (B, 4) bool
        -> u (B, d_model)."""
        return self.fuse(self.tokens(image, audio, chunks, joint, action, mask).flatten(1))

    def tokens(self, image, audio, chunks, joint, action, mask):
        """The per-modality tokens (B, 4, d_token), masked ones replaced by their mask embeddings.

        A modality whose input is not finite is masked too (and its input zeroed), so no NaN gets through."""
        image = image.float() if image.dtype != torch.uint8 else image
        inputs, present = [image, audio, joint, action], None
        for m, x in enumerate(inputs):
            if x.dtype != torch.uint8:
                finite = torch.isfinite(x.flatten(1)).all(-1)
                # the rare path: mask the modality, zero its input (always, in a traced graph: no branches)
                if torch.jit.is_tracing() or not bool(finite.all()):
                    present = list(mask.unbind(1)) if present is None else present
                    present[m] = present[m] & finite
                    inputs[m] = torch.where(finite.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))
        image, audio, joint, action = inputs
        mask = mask if present is None else torch.stack(present, 1)
        tokens = torch.stack(
            (self.vision(image), self.audio(audio, chunks), self.joint(joint), self.action(action)), 1
        )  # (B, 4, d_token)
        return torch.where(mask[..., None], tokens, self.mask_tokens.expand_as(tokens))
