"""The world model's parts as graphs with plain tensor inputs and outputs, the form ONNX export traces.

- `TickGraph`: one streaming tick, the brain's per-tick path: tick arrays and the belief state in; the latent
  z, the layers' energies and the new state out (encoders, Hamiltonian backbone step, head);
- `EncoderGraph`: tick arrays -> u_t and its world part (u_t less the action's share);
- `BackboneStepGraph`: u_t, dt_eff and the state -> y_t, energies, new state;
- `RolloutGraph`: z0 (N, 2D), actions (N, K, A), dt (N, K), residual (1 or N, 2D) -> z (N, K, 2D): K fixed at
  export (one graph per horizon the planner rolls out), N dynamic; the residual is the memory's correction
  per tick on the first `corrected_ticks` ticks (runtime/adapt/fast.py), zeros for none;
- `ActorGraph`: the distilled actor, z, goal and measured joints -> the step.

The belief state is one float64 tensor per layer, (B, experts, oscillators, 2): the oscillators run in
float64 (experts.py) and the graph keeps them so. dt_eff is clamped into the model's stable band inside the
graph, with the band's ends fixed at export; the torch path also counts the clamps, which the runtime does
beside the graph.
"""

import torch
from torch import nn

from runtime.world_model.model import WorldModel


class EncoderGraph(nn.Module):
    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, image, audio, audio_chunks, joint, action, mask):
        tokens = self.model.encoder.tokens(image, audio, audio_chunks, joint, action, mask)
        u = self.model.encoder.fuse(tokens.flatten(1))
        return u, self.model.world_input(tokens, u)


class BackboneStepGraph(nn.Module):
    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model
        self.lo, self.hi = model.dt_band()

    def forward(self, u, dt_eff, *state):
        dt = torch.nan_to_num(dt_eff.float(), nan=1 / 30).clamp(self.lo, self.hi)
        y, new_state, aux = self.model.belief.step(u, dt, list(state))
        return (y, aux["energy"], *new_state)


class TickGraph(nn.Module):
    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model
        self.encode, self.backbone = EncoderGraph(model), BackboneStepGraph(model)

    def forward(self, image, audio, audio_chunks, joint, action, mask, dt_eff, *state):
        u, u_world = self.encode(image, audio, audio_chunks, joint, action, mask)
        y, energy, *new_state = self.backbone(u, dt_eff, *state)
        return (self.model.latent(u, y, u_world), energy, *new_state)


class RolloutGraph(nn.Module):
    def __init__(self, model: WorldModel, corrected_ticks: int):
        super().__init__()
        self.model, self.corrected_ticks = model, corrected_ticks
        if hasattr(model.predictor, "_back"):
            with torch.no_grad():  # the basis's inverse, taken now: the graph holds it as a constant
                model.predictor._back()

    def forward(self, z0, actions, dt, residual):
        return self.model.rollout(z0, actions, dt, residual, self.corrected_ticks)


class ActorGraph(nn.Module):
    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, z, goal, measured):
        return self.actor(z, goal, measured)
