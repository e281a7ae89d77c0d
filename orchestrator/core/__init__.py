"""The pure core: configuration models, the gate and plans as data, signatures and what they
prove, the report model. Plain data in, plain data out; imports nothing else of ours."""
