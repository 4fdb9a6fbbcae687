"""The world model (issue 5), so far: its data (`data`), the oscillator banks' symplectic step and scan
(`oscillators`), and one backbone layer (`layer`). Encoders, the experts, the JEPA objective, baselines and
training follow."""
