"""Datasets: the CSS-2D generator, loaders for CSS, FashionIQ, Shoes, Fashion200k and MIT-States,
the vocabulary, and image preprocessing.

Nothing here imports torch at package import; the torch ``Dataset`` views live in
``tgir.data.torch_datasets``.
"""
