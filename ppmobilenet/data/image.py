"""Reading one image file into the form every transform expects: an RGB PIL image."""
from ..board import load_image as _board_load_image
from ..io import IMAGE_EXTENSIONS as IMG_EXTENSIONS  # noqa: F401 -- the one tuple, kept under its data-side name
from .errors import DataError


def load_image(path):
    """Open `path` and return an RGB PIL image (grayscale, 16-bit, RGBA, palette, CMYK converted;
    EXIF rotation applied, as phone photos need). Any failure is a DataError naming the file."""
    return _board_load_image(path, error=DataError)
