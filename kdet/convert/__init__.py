"""kdet.convert: safe PyTorch-checkpoint reader/writer and key maps (pycls, mmcls, mmdet,
torchvision) onto kdet's models. Nothing here imports torch."""
from kdet.convert.keymaps import SOURCES
from kdet.convert.loader import LoadResult, export_state_dict, load_weights
from kdet.convert.to_mmdet import mmdet_to_pycls, pycls_to_mmdet
from kdet.convert.torch_reader import load_torch_file, read_torch_checkpoint
from kdet.convert.torch_writer import write_torch_checkpoint

__all__ = ["SOURCES", "LoadResult", "load_weights", "export_state_dict", "read_torch_checkpoint", "load_torch_file",
           "write_torch_checkpoint", "pycls_to_mmdet", "mmdet_to_pycls"]
