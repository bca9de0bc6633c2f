"""Reading one image file into the form every transform expects: an RGB PIL image."""
import numpy as np
from PIL import Image, ImageOps

from .errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")


def load_image(path):
    """Open `path` and return an RGB PIL image (grayscale, 16-bit, RGBA, palette, CMYK converted;
    EXIF rotation applied, as phone photos need). Any failure is a DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()                      # decode now: a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"image path is a directory: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncation
        raise DataError(f"cannot read image {path}: {e}") from None


def _to_rgb(img):
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: PIL's convert("RGB") clips instead of scaling
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")
