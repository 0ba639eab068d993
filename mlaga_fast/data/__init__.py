"""The multimodal graph data layer: MultimodalGraph, image sources, the dataset directory format,
loaders for MAGB / MM-GRAPH / PyG / your own tables, node and link splits. See docs/data_format.md."""
from mlaga_fast.data.graph import LinkSplit, MultimodalGraph
from mlaga_fast.data.images import (
    ArrayImageSource,
    FolderImageSource,
    ImageSource,
    ImageUnavailable,
    TarImageSource,
    image_source_from_manifest,
    placeholder_image,
    register_image_source,
    registered_kinds,
)
from mlaga_fast.data.splits import random_node_split, split_links
from mlaga_fast.data.store import load, read_manifest, save, save_link_split
from mlaga_fast.data.table import load_table, write_tables

__all__ = [
    "ArrayImageSource", "FolderImageSource", "ImageSource", "ImageUnavailable", "LinkSplit",
    "MultimodalGraph", "TarImageSource", "image_source_from_manifest", "load", "load_table", "placeholder_image",
    "random_node_split", "read_manifest", "register_image_source", "registered_kinds", "save",
    "save_link_split", "split_links", "write_tables",
]
