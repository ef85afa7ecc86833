"""The torch engine of ``pynetbuilder train --engine torch``: a Caffe run folder
(solver.prototxt and its net) trained through the PyTorch backend with Caffe's
solver arithmetic, data semantics, log format and snapshot files, in one process or
many (``torchrun`` / DistributedDataParallel).

- :mod:`.solver`: SGD, Nesterov, Adam, every lr policy, ``iter_size``,
  ``clip_gradients``, L1/L2, Caffe's ``SolverState``;
- :mod:`.fillers`: initial weights from the prototxt's fillers;
- :mod:`.data`: Data (LMDB/LevelDB), ImageData, HDF5Data with Caffe's
  ``DataTransformer``, in DataLoader worker processes, each rank its share;
- :mod:`.engine`: the loop (tests, display, snapshots, glog-format log);
- :mod:`.launch`: one process, or ``torchrun`` with gloo (CPU) / NCCL (CUDA).
"""
