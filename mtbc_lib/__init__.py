"""mtbc: reproducible companion of Aumente-Maestro et al. (2025), multi-task breast
cancer segmentation and classification in ultrasound images (BUSI / Curated BUSI)."""

__version__ = "0.1.0"
