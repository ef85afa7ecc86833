"""Caffe Python layers shipped with pynetbuilder (``type: "Python"`` in a prototxt).

A net names one with ``python_param { module: "pynetbuilder.caffe_layers.<module>"
layer: "<Class>" }``; Caffe imports the module when it builds the net, so only the
process running Caffe (pycaffe, or the ``caffe`` tool with this package on its
``PYTHONPATH``) needs :mod:`caffe`.  Importing this package does not import Caffe.

- :mod:`pynetbuilder.caffe_layers.shake_shake`: ``ShakeShake``, the per-sample random
  mix of two residual branches of shake-shake regularisation.
"""
