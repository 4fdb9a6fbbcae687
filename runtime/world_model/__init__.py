"""The world model (issue 5), so far: its data (`data`), the tick encoders (`encoders`), the oscillator
banks' symplectic step and scan (`oscillators`), one backbone layer (`layer`) and the action-conditioned
rollout transition (`transition`). The experts' router, the JEPA objective, baselines and training follow."""
