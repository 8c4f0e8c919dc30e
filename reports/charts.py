"""The PNG chart of scheduled report emails: credits per day, stacked by product.

Drawn server-side with matplotlib's Agg canvas on a ``Figure`` of its own (never ``pyplot``,
whose global state is not safe in a threaded worker). matplotlib is imported on first use, so
processes that never draw a chart (the web server) do not pay for it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from io import BytesIO

# The dashboard's palette and colour rule (reports/static/reports/charts.js and
# ``reports.cycle_usage``): a product is PALETTE[product id % 10] on the pages and in the email;
# usage without a product, and the products beyond MAX_SERIES, are grey.
PALETTE = (
    "#2563eb",
    "#f59e0b",
    "#059669",
    "#db2777",
    "#7c3aed",
    "#0891b2",
    "#dc2626",
    "#65a30d",
    "#475569",
    "#ea580c",
)
GREY = "#94a3b8"
MAX_SERIES = 6


@dataclass(frozen=True)
class Series:
    name: str
    product_id: int | None
    credits_by_day: Mapping[date, Decimal]

    @property
    def colour(self) -> str:
        return GREY if self.product_id is None else PALETTE[self.product_id % len(PALETTE)]

    @property
    def total(self) -> Decimal:
        return sum(self.credits_by_day.values(), Decimal(0))


def daily_credits_png(*, days: Sequence[date], series: Sequence[Series]) -> bytes:
    """A stacked bar chart, one bar per local day and one colour per product (the products
    with the most credits first), as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = _top_series(series)
    figure = Figure(figsize=(6.4, 3.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    positions = range(len(days))
    bottoms = [0.0] * len(days)
    for one in series:
        # Floats only to place the bars: every figure in the email's text stays a Decimal.
        heights = [float(one.credits_by_day.get(day, 0)) for day in days]
        axes.bar(positions, heights, bottom=bottoms, width=0.8, label=one.name, color=one.colour)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights, strict=True)]
    step = 1 if len(days) <= 7 else 3
    axes.set_xticks(list(positions)[::step])
    axes.set_xticklabels([f"{day:%a %d}" if step == 1 else f"{day:%d}" for day in days][::step])
    axes.yaxis.set_major_locator(MaxNLocator(nbins=4))
    axes.set_ylabel("Credits")
    axes.set_xlim(-0.6, len(days) - 0.4)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=8)
    if series:
        # Below the bars, never over them.
        axes.legend(
            fontsize=8,
            frameon=False,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncols=min(3, len(series)),
        )
    else:
        axes.text(0.5, 0.5, "No usage", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    output = BytesIO()
    # No timestamp or version in the file: the same data gives the same bytes.
    figure.savefig(output, format="png", metadata={"Software": None})
    return output.getvalue()


def _top_series(series: Sequence[Series]) -> list[Series]:
    """The products with the most credits first; beyond ``MAX_SERIES``, one grey stack."""
    ranked = sorted(series, key=lambda one: (-one.total, one.name))
    if len(ranked) <= MAX_SERIES:
        return ranked
    shown, rest = ranked[: MAX_SERIES - 1], ranked[MAX_SERIES - 1 :]
    other: dict[date, Decimal] = {}
    for one in rest:
        for day, credits in one.credits_by_day.items():
            other[day] = other.get(day, Decimal(0)) + credits
    return [*shown, Series("Other products", None, other)]
