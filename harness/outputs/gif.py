"""Rollout GIFs: pose, prediction and ground truth side by side, one GIF frame per video frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Layout of a GIF frame, in output pixels, top to bottom: a header naming the
# panels, the panels (each scale*H x scale*W) separated by PANEL_GAP_PX, and a
# footer with the frame counter. Width = n*scale*W + (n-1)*PANEL_GAP_PX.
HEADER_PX = 16
FOOTER_PX = 14
PANEL_GAP_PX = 4
BACKGROUND_RGB = (24, 24, 24)
TEXT_RGB = (235, 235, 235)
MAX_FONT_PX = 12
MIN_FONT_PX = 6
# A pixel is redrawn only once a channel has moved more than this many levels
# (of 255) from the colour on screen. Sampling flicker of a level or two is
# invisible yet makes every pixel "changed"; holding it lets the GIF store only
# changed pixels. Measured on a 630-frame, 3-panel, scale-4 rollout with a
# prediction flickering by ~1 level: 7.5 MB without holding, 1.7 MB with it.
HOLD_LEVELS = 6
# One palette index stays free so Pillow can mark unchanged pixels transparent.
PALETTE_COLORS = 255
PALETTE_SAMPLE_FRAMES = 128
# GIF delays are whole centiseconds, and browsers slow delays under 2 cs down to 10 cs.
MAX_GIF_FPS = 50

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def to_uint8_frames(frames) -> np.ndarray:
    """Frames as uint8 [T, H, W, 3].

    Accepts a torch tensor or numpy array shaped [T, 3, H, W] or [T, H, W, 3]:
    floats in [0, 1] become round(255 x) clipped to 0..255 (NaN becomes 0);
    integers are taken as 0..255 values. Axis 1 of size 3 is read as the
    channel axis unless the last axis has size 3 too.
    """
    if hasattr(frames, "detach"):  # a torch tensor, recognised without importing torch
        tensor = frames.detach().cpu()
        frames = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    array = np.asarray(frames)
    if array.ndim != 4:
        raise ValueError(f"expected frames [T, 3, H, W] or [T, H, W, 3], got shape {array.shape}")
    if array.shape[-1] != 3 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    elif array.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels in axis 1 or 3, got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.rint(np.nan_to_num(array, nan=0.0) * 255.0)
        return np.clip(scaled, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    raise TypeError(f"unsupported frame dtype {array.dtype}")


def write_rollout_gif(
    path: Path | str,
    prediction: np.ndarray,
    truth: np.ndarray | None = None,
    pose: np.ndarray | None = None,
    fps: int = 15,
    scale: int = 4,
    max_frames: int | None = None,
) -> Path:
    """Write an endlessly looping GIF with panels pose | prediction | ground truth (those given).

    Each input is anything `to_uint8_frames` accepts; all must share T, H and W.
    Panels are upscaled `scale`x nearest-neighbour, named in a header, and a
    footer counts frames (index/last index of the full rollout). `max_frames`
    keeps only the first frames. Returns the path written.

    The GIF is for looking, not measuring: colours go through one 255-colour
    palette and changes of at most HOLD_LEVELS/255 are not redrawn.
    """
    if not 1 <= fps <= MAX_GIF_FPS:
        raise ValueError(f"fps must be in 1..{MAX_GIF_FPS} (GIF delays are whole centiseconds), got {fps}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    named = [("pose", pose), ("prediction", prediction), ("ground truth", truth)]
    panels = {name: to_uint8_frames(frames) for name, frames in named if frames is not None}
    shapes = {frames.shape for frames in panels.values()}
    if len(shapes) != 1:
        raise ValueError(f"all panels must have the same [T, H, W, 3] shape, got {sorted(shapes)}")
    total = next(iter(shapes))[0]
    if total == 0:
        raise ValueError("no frames to write")
    count = total if max_frames is None else min(total, max_frames)

    # Holding and palette building work on the small 1x frames, before upscaling.
    shown = {name: _hold_small_changes(frames[:count]) for name, frames in panels.items()}
    renderer = _FrameRenderer(list(shown), shown["prediction"].shape[1:3], scale, total)
    palette = _shared_palette(list(shown.values()), renderer.background)
    gif_frames = (renderer.render(t, [frames[t] for frames in shown.values()], palette) for t in range(count))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(gif_frames)
    # Pillow pulls the other frames from the generator. The counter makes every
    # frame differ, so Pillow never merges two and the file has exactly `count`.
    first.save(path, save_all=True, append_images=gif_frames, duration=frame_durations_ms(count, fps), loop=0)
    return path


def frame_durations_ms(count: int, fps: int) -> list[int]:
    """Per-frame delays, whole centiseconds given in ms, whose running sum tracks t / fps.

    15 fps (66.7 ms) alternates 70 and 60 ms, so the rate is exact on average
    rather than rounded to 14.3 or 16.7 fps.
    """
    boundaries_cs = np.rint(np.arange(count + 1) * 100.0 / fps).astype(int)
    return [int(delay) * 10 for delay in np.diff(boundaries_cs)]


def _hold_small_changes(frames: np.ndarray) -> np.ndarray:
    """The frames as shown when a pixel is redrawn only after moving more than HOLD_LEVELS."""
    shown = frames.copy()
    on_screen = frames[0].astype(np.int16)
    for t in range(1, len(frames)):
        current = frames[t].astype(np.int16)
        moved = np.abs(current - on_screen).max(axis=-1) > HOLD_LEVELS
        on_screen[moved] = current[moved]
        shown[t] = on_screen
    return shown


def _shared_palette(panels: list[np.ndarray], background: np.ndarray) -> Image.Image:
    """One palette for the whole GIF, so an unchanged pixel keeps its index from frame to frame.

    MAXCOVERAGE keeps rare colours (thin coloured pose limbs) that median cut merges away.
    """
    stride = max(1, len(panels[0]) // PALETTE_SAMPLE_FRAMES)
    pixels = [frames[::stride].reshape(-1, 3) for frames in panels] + [background.reshape(-1, 3)]
    sample = Image.fromarray(np.concatenate(pixels)[np.newaxis])
    return sample.quantize(PALETTE_COLORS, method=Image.Quantize.MAXCOVERAGE)


class _FrameRenderer:
    """Draws one GIF frame: the fixed header and background, the upscaled panels, the counter."""

    def __init__(self, names: list[str], frame_size: tuple[int, int], scale: int, total: int) -> None:
        self.scale = scale
        self.total = total
        self.panel_height = frame_size[0] * scale
        self.panel_width = frame_size[1] * scale
        self.width = len(names) * self.panel_width + (len(names) - 1) * PANEL_GAP_PX
        self.height = HEADER_PX + self.panel_height + FOOTER_PX
        self.counter_style, self.counter_font = self._fitting_counter()
        self.background = self._draw_background(names)

    def render(self, index: int, frames: list[np.ndarray], palette: Image.Image) -> Image.Image:
        canvas = self.background.copy()
        for panel, frame in enumerate(frames):
            left = self._panel_left(panel)
            upscaled = frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
            canvas[HEADER_PX : HEADER_PX + self.panel_height, left : left + self.panel_width] = upscaled
        image = Image.fromarray(canvas)
        counter = _counter_texts(index, self.total - 1)[self.counter_style]
        footer_middle = (2, self.height - FOOTER_PX / 2)
        _draw(image).text(footer_middle, counter, fill=TEXT_RGB, font=self.counter_font, anchor="lm")
        return image.quantize(palette=palette, dither=Image.Dither.NONE)

    def _fitting_counter(self) -> tuple[int, Font]:
        """The most explicit counter style that fits the frame width, and its font.

        The counter must stay readable in every frame: it is what makes each GIF
        frame differ from the last (so none is merged away), even for a still video.
        """
        first, last = _counter_texts(0, self.total - 1), _counter_texts(self.total - 1, self.total - 1)
        for style in range(len(first)):
            font = _fitting_font([first[style], last[style]], self.width - 4)
            if font is not None:
                return style, font
        raise ValueError(f"a {self.width}-pixel-wide GIF has no room for a frame counter; raise `scale`")

    def _panel_left(self, panel: int) -> int:
        return panel * (self.panel_width + PANEL_GAP_PX)

    def _draw_background(self, names: list[str]) -> np.ndarray:
        image = Image.new("RGB", (self.width, self.height), BACKGROUND_RGB)
        draw = _draw(image)
        # Panel names may be clipped in tiny panels; the video is what matters there.
        font = _fitting_font(names, self.panel_width - 2) or ImageFont.load_default(MIN_FONT_PX)
        for panel, name in enumerate(names):
            centre = (self._panel_left(panel) + self.panel_width / 2, HEADER_PX / 2)
            draw.text(centre, name, fill=TEXT_RGB, font=font, anchor="mm")
        return np.asarray(image)


def _draw(image: Image.Image) -> ImageDraw.ImageDraw:
    """A drawing context with aliased text: two colours only, so text costs no palette entries."""
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    return draw


def _counter_texts(index: int, last: int) -> list[str]:
    """The frame counter in its styles, most explicit first."""
    given = " (given)" if index == 0 else ""
    return [f"frame {index}/{last}{given}", f"{index}/{last}", f"{index}"]


def _fitting_font(texts: list[str], max_width: float) -> Font | None:
    """The largest default font (MAX_FONT_PX down to MIN_FONT_PX) in which all `texts` fit `max_width`."""
    for size in range(MAX_FONT_PX, MIN_FONT_PX - 1, -1):
        font = ImageFont.load_default(size)
        if max(font.getlength(text) for text in texts) <= max_width:
            return font
    return None
