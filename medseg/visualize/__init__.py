"""Quick-look figures: image, mask overlay and uncertainty."""

from medseg.visualize.overlay import overlay_figure

__all__ = ["overlay_figure"]
