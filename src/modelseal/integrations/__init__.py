"""Drop-in verified versions of the frameworks' own load and save calls.

One module per framework; each imports its framework only when called, so
`import modelseal.integrations.torch` costs nothing until a model is loaded.
Every loader verifies first and hands the framework the very bytes it verified
(in memory, or a private snapshot when the framework insists on a path); every
`save` writes with the framework and then seals.

    from modelseal.integrations import torch as mtorch
    state = mtorch.load("model.pt", public_keys=["trainer.pub"])
"""
