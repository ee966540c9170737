"""manifoldnn: geometric deep learning on manifolds for PyTorch.

Subpackages
-----------
manifolds   geometry: the Grassmann manifold for geoopt, geoopt's own manifolds, Karcher means
layers      ``nn.Module`` layers acting on manifold-valued data
losses      losses for manifold-valued representations
clustering  scikit-learn-style estimators and clustering metrics
"""

__version__ = "0.1.0"
