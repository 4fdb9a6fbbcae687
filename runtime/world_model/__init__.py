"""The world model (issue 5), so far: its data (`data`), the tick encoders (`encoders`), the oscillator
banks' symplectic step and scan (`oscillators`), one bank's layer (`layer`), the sparse mixture of Hamiltonian
experts (`experts`), their stack (`backbone`), the action-conditioned rollout transition (`transition`) and
the anti-collapse terms (`regularizers`). The JEPA objective itself, baselines and training follow."""
