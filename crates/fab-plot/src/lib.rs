//! # fab-plot
//!
//! PNG figures for FAB results (`fab_train::plot` re-exports this crate).
//!
//! Every function takes plain host data (`f64` slices, closures over `f64`) and a path, and
//! writes one PNG with a white background, a title, axis labels, tick labels and, where a panel
//! holds several series, a legend:
//!
//! * [`contour_samples_2d`]: a row of panels ("flow", "AIS", "buffer", ...) each showing banded
//!   contours of a 2-D target log-density with samples drawn on top as small translucent dots
//!   (the FAB paper's GMM figure).
//! * [`pairwise_marginals`]: a lower-triangular grid of 2-D marginals of a d-dimensional sample
//!   set over contours of the target's 2-D marginals (the Many Well figure).
//! * [`training_curves`]: small panels of training statistics against iteration, with optional
//!   logarithmic y-axes and gaps where values are not finite.
//! * [`ramachandran`] / [`ramachandran_panels`]: 2-D histograms of backbone dihedral angles on
//!   `[−π, π]²` with a logarithmic colour scale shared by all panels, optionally importance
//!   weighted.
//! * [`histogram_1d_log`]: overlaid 1-D density histograms on a logarithmic y-axis.
//! * [`heatmaps`]: distributions on 2-D grids side by side (e.g. target, student and teacher of a
//!   GFlowNet on an `H × H` grid world), one square cell per grid state, on a (by default
//!   shared, logarithmic) viridis colour scale with a colour bar.
//!
//! The pure parts are public and tested on their own: [`viridis`], [`histogram_1d`],
//! [`histogram_2d`], [`ramachandran_histogram`], [`ScalarGrid`] and [`marching_squares`].
//!
//! Text is rendered with DejaVu Sans, embedded in the binary (see `assets/README.md` of this
//! crate for its provenance and licence), so no system fonts are needed.
//!
//! Non-finite data never cause a panic: non-finite points, weights and density values are
//! skipped (or, for densities, clipped to the contour floor), and empty inputs produce panels
//! without data. Inputs that cannot be plotted at all (no panels, mismatched lengths, invalid
//! ranges or sizes) give a [`PlotError::InvalidInput`].

use std::cell::Cell;
use std::f64::consts::PI;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Errors from the plotting functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The inputs cannot be plotted: no panels, mismatched lengths, an invalid range, bin count
    /// or image size.
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
    /// The embedded font could not be registered with the drawing library.
    #[error("the embedded font could not be loaded")]
    Font,
    /// Creating the output directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Drawing or encoding/writing the PNG failed.
    #[error("drawing failed: {0}")]
    Drawing(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(err: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Drawing(err.to_string())
    }
}

/// Result alias for the plotting functions.
pub type Result<T> = std::result::Result<T, PlotError>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(PlotError::InvalidInput(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Fonts and text styles
// ---------------------------------------------------------------------------------------------

/// DejaVu Sans (Bitstream Vera licence with public-domain DejaVu changes).
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT_FAMILY: &str = "sans-serif";

const TITLE_PX: f64 = 22.0;
const CAPTION_PX: f64 = 17.0;
const DESC_PX: f64 = 15.0;
const TICK_PX: f64 = 13.0;

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

fn text_style(px: f64) -> TextStyle<'static> {
    (FONT_FAMILY, px).into_font().color(&BLACK)
}

fn centred(style: TextStyle<'static>) -> TextStyle<'static> {
    style.pos(Pos::new(HPos::Center, VPos::Center))
}

// ---------------------------------------------------------------------------------------------
// Colours
// ---------------------------------------------------------------------------------------------

/// Ten evenly spaced samples of the viridis colormap (sRGB), from 0 to 1.
const VIRIDIS_ANCHORS: [[u8; 3]; 10] = [
    [68, 1, 84],
    [72, 40, 120],
    [62, 74, 137],
    [49, 104, 142],
    [38, 130, 142],
    [31, 158, 137],
    [53, 183, 121],
    [109, 205, 89],
    [180, 222, 44],
    [253, 231, 37],
];

/// The viridis colormap: `t` in `[0, 1]` (clamped; NaN maps to 0) to an sRGB triple, from dark
/// purple (0) through blue and green to yellow (1). Perceptually ordered, so it is used for
/// log-density levels and histogram colour scales. Linear interpolation in a small lookup table.
pub fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let last = VIRIDIS_ANCHORS.len() - 1;
    let s = t * last as f64;
    let i = (s.floor() as usize).min(last - 1);
    let f = s - i as f64;
    let (a, b) = (VIRIDIS_ANCHORS[i], VIRIDIS_ANCHORS[i + 1]);
    std::array::from_fn(|k| (a[k] as f64 + f * (b[k] as f64 - a[k] as f64)).round() as u8)
}

/// A qualitative palette for series (the common "category 10" colours): line colours of
/// [`training_curves`] and [`histogram_1d_log`] cycle through it unless a colour is given.
pub const QUALITATIVE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Default colour of sample dots on contour plots (a red that stands out on viridis).
const SAMPLE_COLOUR: [u8; 3] = [214, 39, 40];

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Mix a colour towards white; `amount` 0 keeps it, 1 gives white.
fn lighten(c: [u8; 3], amount: f64) -> [u8; 3] {
    std::array::from_fn(|k| (c[k] as f64 + (255.0 - c[k] as f64) * amount).round() as u8)
}

// ---------------------------------------------------------------------------------------------
// Ticks and number formatting
// ---------------------------------------------------------------------------------------------

/// Replace ASCII hyphen-minus by the typographic minus sign.
fn typographic_minus(s: String) -> String {
    s.replace('-', "\u{2212}")
}

fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '\u{207B}',
            '0' => '\u{2070}',
            '1' => '\u{00B9}',
            '2' => '\u{00B2}',
            '3' => '\u{00B3}',
            d => char::from_u32(0x2070 + d.to_digit(10).unwrap_or(0)).unwrap_or(d),
        })
        .collect()
}

fn subscript(n: usize) -> String {
    n.to_string().chars().map(|c| char::from_u32(0x2080 + c.to_digit(10).unwrap_or(0)).unwrap_or(c)).collect()
}

/// The default name of coordinate `d` (zero-based) in figures: `x₁` for `d = 0`, as in the paper.
fn coordinate_name(d: usize) -> String {
    format!("x{}", subscript(d + 1))
}

/// Tick positions at multiples of a nice step (1, 2, 5 or 2.5 times a power of ten) inside
/// `[lo, hi]`: the step whose tick count is closest to `target` (ties to the earlier mantissa in
/// that order, then the smaller step).
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (Vec::new(), 1.0);
    }
    let target = target.max(2) as f64;
    let count = |step: f64| ((hi / step + 1e-9).floor() - (lo / step - 1e-9).ceil() + 1.0).max(0.0);
    let e = ((hi - lo) / target).log10().floor();
    let mut step = 10f64.powf(e);
    let mut best = f64::INFINITY;
    for exp in [e - 1.0, e, e + 1.0] {
        for m in [1.0, 2.0, 5.0, 2.5] {
            let candidate = m * 10f64.powf(exp);
            let score = (count(candidate) - target).abs();
            if score < best {
                best = score;
                step = candidate;
            }
        }
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    if !step.is_finite() || step <= 0.0 || last.saturating_sub(first) > 1000 {
        return (Vec::new(), 1.0);
    }
    let ticks = (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            if v.abs() < step * 1e-9 {
                0.0
            } else {
                v
            }
        })
        .collect();
    (ticks, step)
}

/// Format a tick value whose neighbours are `step` apart.
fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let av = v.abs();
    if !(1e-3..1e5).contains(&av) {
        let s = format!("{v:.1e}").replace(".0e", "e");
        return typographic_minus(s);
    }
    let mut decimals = 0usize;
    while decimals < 6 {
        let scaled = step * 10f64.powi(decimals as i32);
        if (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0) {
            break;
        }
        decimals += 1;
    }
    typographic_minus(format!("{v:.decimals$}"))
}

/// Format a number with about `sig` significant digits, without trailing zeros.
fn format_sig(v: f64, sig: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let av = v.abs();
    if !(1e-3..1e5).contains(&av) {
        let s = format!("{:.*e}", sig.saturating_sub(1), v);
        return typographic_minus(s);
    }
    let mag = av.log10().floor() as i32;
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    typographic_minus(s)
}

fn pi_label(v: f64) -> String {
    let k = (v / (PI / 2.0)).round() as i64;
    match k {
        0 => "0".to_string(),
        1 => "π/2".to_string(),
        -1 => "\u{2212}π/2".to_string(),
        2 => "π".to_string(),
        -2 => "\u{2212}π".to_string(),
        k if k % 2 == 0 => typographic_minus(format!("{}π", k / 2)),
        k => typographic_minus(format!("{k}π/2")),
    }
}

#[derive(Debug, Clone, Copy)]
enum TickKind {
    Linear {
        step: f64,
    },
    Pi,
    /// Positions are log10 of the value; ticks at whole decades are labelled `10ⁿ`, otherwise
    /// ticks are labelled with the plain value.
    Log10 {
        decades: bool,
    },
}

/// One axis of a panel: its range, tick positions, tick label style and description.
#[derive(Debug, Clone)]
struct AxisSpec {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
    kind: TickKind,
    label: String,
}

/// A linear axis with explicit tick positions (bold) and minor grid positions (light).
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        if !t.is_finite() {
            return limit.0;
        }
        let len = (limit.1 - limit.0) as f64;
        limit.0 + (len * t.clamp(-16.0, 16.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

type Cart = Cartesian2d<Axis, Axis>;
type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

impl AxisSpec {
    fn linear(lo: f64, hi: f64, target: usize, label: &str) -> Self {
        let (ticks, step) = nice_ticks(lo, hi, target);
        Self { lo, hi, ticks, minor: Vec::new(), kind: TickKind::Linear { step }, label: label.to_string() }
    }

    fn angle(label: &str) -> Self {
        Self {
            lo: -PI,
            hi: PI,
            ticks: vec![-PI, -PI / 2.0, 0.0, PI / 2.0, PI],
            minor: Vec::new(),
            kind: TickKind::Pi,
            label: label.to_string(),
        }
    }

    /// An axis whose coordinates are log10 of the values, `lo` and `hi` in log10 units.
    fn log10(lo: f64, hi: f64, label: &str) -> Self {
        let k0 = (lo - 1e-9).ceil() as i64;
        let k1 = (hi + 1e-9).floor() as i64;
        let decades: Vec<i64> = if k1 >= k0 { (k0..=k1).collect() } else { Vec::new() };
        let whole_decades = decades.len() >= 2;
        let (ticks, minor) = if whole_decades {
            let stride = decades.len().div_ceil(7).max(1) as i64;
            let ticks: Vec<f64> = decades.iter().filter(|k| k.rem_euclid(stride) == 0).map(|&k| k as f64).collect();
            let minor = if stride == 1 && decades.len() <= 6 {
                (k0 - 1..=k1).flat_map(|k| (2..10).map(move |m| k as f64 + (m as f64).log10())).filter(|v| *v > lo && *v < hi).collect()
            } else {
                Vec::new()
            };
            (ticks, minor)
        } else {
            // Less than two decades visible: label 1-2-5 (or 1..9) multiples instead.
            let pick = |mults: &[f64]| -> Vec<f64> {
                (lo.floor() as i64 - 1..=hi.ceil() as i64)
                    .flat_map(|k| mults.iter().map(move |m| k as f64 + m.log10()))
                    .filter(|v| *v >= lo - 1e-9 && *v <= hi + 1e-9)
                    .collect()
            };
            let mut ticks = pick(&[1.0, 2.0, 5.0]);
            if ticks.len() < 3 {
                ticks = pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
            }
            if ticks.len() < 2 {
                ticks = vec![lo, hi];
            }
            (ticks, Vec::new())
        };
        Self { lo, hi, ticks, minor, kind: TickKind::Log10 { decades: whole_decades }, label: label.to_string() }
    }

    fn coord(&self) -> Axis {
        Axis { lo: self.lo, hi: self.hi, ticks: self.ticks.clone(), minor: self.minor.clone() }
    }

    fn format(&self, v: f64) -> String {
        match self.kind {
            TickKind::Linear { step } => format_tick(v, step),
            TickKind::Pi => pi_label(v),
            TickKind::Log10 { decades } => {
                let k = v.round();
                if decades && (v - k).abs() < 1e-6 {
                    format!("10{}", superscript(k as i64))
                } else {
                    format_sig(10f64.powf(v), 2)
                }
            }
        }
    }
}

/// Expand `[lo, hi]` by a fraction of its width, or to a unit interval around a single value.
fn padded_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let half = (lo.abs() * 0.1).max(0.5);
        (lo - half, lo + half)
    }
}

// ---------------------------------------------------------------------------------------------
// Layout helpers
// ---------------------------------------------------------------------------------------------

const LEFT_AREA: u32 = 62;
const BOTTOM_AREA: u32 = 48;
const PAD_TOP: u32 = 10;
const PAD_RIGHT: u32 = 18;
const PAD_LEFT: u32 = 10;

fn check_size(size: (u32, u32)) -> Result<(u32, u32)> {
    let ok = |v: u32| (64..=16_384).contains(&v);
    if ok(size.0) && ok(size.1) {
        Ok(size)
    } else {
        invalid(format!("image size {}x{} must be between 64 and 16384 pixels per side", size.0, size.1))
    }
}

fn check_range(name: &str, r: [f64; 2]) -> Result<()> {
    if r[0].is_finite() && r[1].is_finite() && r[0] < r[1] {
        Ok(())
    } else {
        invalid(format!("{name} range [{}, {}] must be finite with lo < hi", r[0], r[1]))
    }
}

/// Create the parent directory, open the PNG backend, fill white and run `draw` on the root area.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    ensure_font()?;
    let size = check_size(size)?;
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    draw(&root)?;
    root.present()?;
    Ok(())
}

/// A text style of at most `px` pixels that fits `text` into `max_w` pixels.
fn fitted(area: &Area<'_>, text: &str, px: f64, max_w: u32) -> Result<(TextStyle<'static>, f64)> {
    let mut size = px;
    loop {
        let style = text_style(size);
        let (w, _) = area.estimate_text_size(text, &style)?;
        if w <= max_w || size <= 8.0 {
            return Ok((style, size));
        }
        size -= 1.0;
    }
}

/// Draw `title` centred at the top of `area` and return the area below it (the whole area when
/// the title is empty).
fn split_title<'b>(area: &Area<'b>, title: &str, px: f64) -> Result<Area<'b>> {
    let title = title.trim();
    if title.is_empty() {
        return Ok(area.clone());
    }
    let (w, h) = area.dim_in_pixel();
    let (style, size) = fitted(area, title, px, w.saturating_sub(12))?;
    let band = ((size * 1.8).ceil() as u32).min(h / 2);
    let (top, rest) = area.split_vertically(band);
    top.draw_text(title, &centred(style), ((w / 2) as i32, (band / 2) as i32))?;
    Ok(rest)
}

/// The shape of a panel's plotting area.
#[derive(Debug, Clone, Copy)]
enum PlotShape {
    /// All the space there is.
    Fill,
    /// Square (for equal-aspect spatial plots).
    Square,
    /// A grid of `x × y` cells: see [`cell_plot_size`].
    Cells { x: usize, y: usize },
}

/// The plotting-area size for a grid of `nx × ny` cells inside `avail_w × avail_h` pixels:
/// square cells (the aspect ratio clamped to `[1/4, 4]`, so a very long grid still gets a usable
/// panel), and each side shrunk to a whole number of pixels per cell when that costs at most 15 %
/// of it, so that all cells are drawn the same size.
fn cell_plot_size(avail_w: u32, avail_h: u32, nx: usize, ny: usize) -> (u32, u32) {
    let aspect = (nx.max(1) as f64 / ny.max(1) as f64).clamp(0.25, 4.0);
    let ph = (avail_h as f64).min(avail_w as f64 / aspect);
    let pw = (ph * aspect).floor().clamp(1.0, avail_w as f64) as u32;
    let ph = ph.floor().clamp(1.0, avail_h as f64) as u32;
    let snap = |len: u32, n: usize| -> u32 {
        let n = n.min(u32::MAX as usize) as u32;
        let whole = len.checked_div(n).map_or(len, |k| k * n);
        if whole > 0 && u64::from(whole) * 100 >= u64::from(len) * 85 {
            whole
        } else {
            len
        }
    };
    (snap(pw, nx), snap(ph, ny))
}

/// Everything a panel needs besides its content.
struct PanelFrame<'s> {
    caption: &'s str,
    x: AxisSpec,
    y: AxisSpec,
    /// The shape of the plotting area.
    shape: PlotShape,
    /// Draw grid lines at the ticks.
    grid: bool,
}

/// Draw the caption of a panel in `area` and return the sub-area for its chart: tick label and
/// axis description margins plus the plotting area (shaped as `frame.shape` asks), centred.
fn panel_area<'b>(area: &Area<'b>, frame: &PanelFrame<'_>) -> Result<Area<'b>> {
    let inner = split_title(area, frame.caption, CAPTION_PX)?;
    let (w, h) = inner.dim_in_pixel();
    let avail_w = w.saturating_sub(PAD_LEFT + LEFT_AREA + PAD_RIGHT);
    let avail_h = h.saturating_sub(BOTTOM_AREA + PAD_TOP);
    if avail_w < 16 || avail_h < 16 {
        return invalid(format!("image too small: a panel has only {w}x{h} pixels"));
    }
    let (pw, ph) = match frame.shape {
        PlotShape::Fill => (avail_w, avail_h),
        PlotShape::Square => {
            let s = avail_w.min(avail_h);
            (s, s)
        }
        PlotShape::Cells { x, y } => cell_plot_size(avail_w, avail_h, x, y),
    };
    // Centred horizontally, top-aligned (right under the caption).
    let (cw, ch) = (LEFT_AREA + pw + PAD_RIGHT, ph + BOTTOM_AREA + PAD_TOP);
    let left = PAD_LEFT + (w - PAD_LEFT - cw) / 2;
    Ok(inner.clone().shrink((left, 0), (cw, ch)))
}

/// Build the chart of a panel on `sub` (from [`panel_area`]): ticks, tick labels, axis
/// descriptions and optional grid; then run `content` on it and frame the plotting area.
fn draw_chart<'c, 'b: 'c, F>(sub: &'c Area<'b>, frame: &PanelFrame<'_>, content: F) -> Result<()>
where
    F: FnOnce(&mut ChartContext<'c, BitMapBackend<'b>, Cart>) -> Result<()>,
{
    let mut chart = ChartBuilder::on(sub)
        .margin_top(PAD_TOP)
        .margin_right(PAD_RIGHT)
        .x_label_area_size(BOTTOM_AREA)
        .y_label_area_size(LEFT_AREA)
        .build_cartesian_2d(frame.x.coord(), frame.y.coord())?;

    let xf = |v: &f64| frame.x.format(*v);
    let yf = |v: &f64| frame.y.format(*v);
    {
        let mut mesh = chart.configure_mesh();
        mesh.x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .label_style(text_style(TICK_PX))
            .axis_desc_style(text_style(DESC_PX))
            .x_desc(frame.x.label.as_str())
            .y_desc(frame.y.label.as_str())
            .bold_line_style(RGBColor(215, 215, 215).stroke_width(1))
            .light_line_style(RGBColor(238, 238, 238).stroke_width(1))
            .axis_style(BLACK.stroke_width(1));
        if !frame.grid {
            mesh.disable_mesh();
        }
        mesh.draw()?;
    }

    content(&mut chart)?;

    let (x, y) = (&frame.x, &frame.y);
    chart.draw_series(std::iter::once(Rectangle::new([(x.lo, y.lo), (x.hi, y.hi)], BLACK.stroke_width(1))))?;
    Ok(())
}

/// Colour every pixel of the plotting area by `colour_at(x, y)` at the pixel centre (`None`
/// leaves it as it is).
fn fill_pixels(
    chart: &ChartContext<'_, BitMapBackend<'_>, Cart>,
    x: &AxisSpec,
    y: &AxisSpec,
    colour_at: impl Fn(f64, f64) -> Option<[u8; 3]>,
) -> Result<()> {
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    for py in 0..h {
        let yv = y.hi - (py as f64 + 0.5) / h as f64 * (y.hi - y.lo);
        for px in 0..w {
            let xv = x.lo + (px as f64 + 0.5) / w as f64 * (x.hi - x.lo);
            if let Some(c) = colour_at(xv, yv) {
                area.draw_pixel((px as i32, py as i32), &rgb(c))?;
            }
        }
    }
    Ok(())
}

/// Write `msg` in the middle of the plotting area.
fn note_in_panel(chart: &ChartContext<'_, BitMapBackend<'_>, Cart>, msg: &str) -> Result<()> {
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    let style = centred(text_style(DESC_PX).color(&RGBColor(110, 110, 110)));
    area.draw_text(msg, &style, ((w / 2) as i32, (h / 2) as i32))?;
    Ok(())
}

/// Draw sample dots, skipping non-finite points and points outside the axes.
fn draw_points(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cart>,
    points: impl Iterator<Item = (f64, f64)>,
    style: &DotStyle,
    x: &AxisSpec,
    y: &AxisSpec,
) -> Result<()> {
    let colour = rgb(style.colour).mix(style.alpha.clamp(0.0, 1.0)).filled();
    let radius = style.radius;
    let inside = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite() && p.0 >= x.lo && p.0 <= x.hi && p.1 >= y.lo && p.1 <= y.hi;
    chart.draw_series(points.filter(inside).map(|p| Circle::new(p, radius, colour)))?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct DotStyle {
    colour: [u8; 3],
    alpha: f64,
    radius: u32,
}

// ---------------------------------------------------------------------------------------------
// Scalar grids and contours
// ---------------------------------------------------------------------------------------------

/// A scalar field sampled on a rectilinear grid: `values[iy * x.len() + ix]` is the value at
/// `(x[ix], y[iy])`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarGrid {
    /// Grid coordinates along x, increasing.
    pub x: Vec<f64>,
    /// Grid coordinates along y, increasing.
    pub y: Vec<f64>,
    /// Values, row-major with x varying fastest.
    pub values: Vec<f64>,
}

impl ScalarGrid {
    /// Evaluate `f` on an `nx × ny` grid of nodes spanning `x_range × y_range` (ends included).
    /// `nx` and `ny` are raised to at least 2.
    pub fn evaluate(f: &dyn Fn(f64, f64) -> f64, x_range: [f64; 2], y_range: [f64; 2], nx: usize, ny: usize) -> Self {
        let nodes = |r: [f64; 2], n: usize| -> Vec<f64> {
            let n = n.max(2);
            (0..n).map(|i| r[0] + (r[1] - r[0]) * i as f64 / (n - 1) as f64).collect()
        };
        let x = nodes(x_range, nx);
        let y = nodes(y_range, ny);
        let values = y.iter().flat_map(|&yv| x.iter().map(move |&xv| (xv, yv))).map(|(a, b)| f(a, b)).collect();
        Self { x, y, values }
    }

    /// The value at node `(ix, iy)`. Panics when the node is outside the grid.
    pub fn value(&self, ix: usize, iy: usize) -> f64 {
        self.values[iy * self.x.len() + ix]
    }

    /// The largest finite value, if any.
    pub fn finite_max(&self) -> Option<f64> {
        self.values.iter().copied().filter(|v| v.is_finite()).reduce(f64::max)
    }

    /// Bilinear interpolation at `(x, y)`, clamped to the grid's extent. Assumes a uniform grid
    /// (as built by [`ScalarGrid::evaluate`]); NaN for a grid with fewer than two nodes per axis
    /// or whose `values` do not match its axes.
    pub fn interpolate(&self, x: f64, y: f64) -> f64 {
        if self.x.len() < 2 || self.y.len() < 2 || self.values.len() != self.x.len() * self.y.len() {
            return f64::NAN;
        }
        let locate = |axis: &[f64], v: f64| -> (usize, f64) {
            let n = axis.len();
            let f = ((v - axis[0]) / (axis[n - 1] - axis[0]) * (n - 1) as f64).clamp(0.0, (n - 1) as f64);
            let i = (f.floor() as usize).min(n - 2);
            (i, f - i as f64)
        };
        let (ix, tx) = locate(&self.x, x);
        let (iy, ty) = locate(&self.y, y);
        let v00 = self.value(ix, iy);
        let v10 = self.value(ix + 1, iy);
        let v01 = self.value(ix, iy + 1);
        let v11 = self.value(ix + 1, iy + 1);
        (v00 * (1.0 - tx) + v10 * tx) * (1.0 - ty) + (v01 * (1.0 - tx) + v11 * tx) * ty
    }
}

/// Contour segments of `grid` at `level` by marching squares: each segment joins two points
/// where linear interpolation along a cell edge crosses the level. A node counts as inside when
/// its value is `> level`; ambiguous (saddle) cells are resolved with the cell-centre average.
/// Cells with a non-finite corner are skipped.
pub fn marching_squares(grid: &ScalarGrid, level: f64) -> Vec<[[f64; 2]; 2]> {
    let (nx, ny) = (grid.x.len(), grid.y.len());
    let mut segments = Vec::new();
    if nx < 2 || ny < 2 || grid.values.len() != nx * ny || !level.is_finite() {
        return segments;
    }
    for iy in 0..ny - 1 {
        for ix in 0..nx - 1 {
            // Corners counter-clockwise from bottom-left: a, b, c, d.
            let pos =
                [[grid.x[ix], grid.y[iy]], [grid.x[ix + 1], grid.y[iy]], [grid.x[ix + 1], grid.y[iy + 1]], [grid.x[ix], grid.y[iy + 1]]];
            let val = [grid.value(ix, iy), grid.value(ix + 1, iy), grid.value(ix + 1, iy + 1), grid.value(ix, iy + 1)];
            if val.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let above = val.map(|v| v > level);
            // Edge k joins corner k and corner k+1: bottom, right, top, left.
            let crossing = |k: usize| -> Option<[f64; 2]> {
                let j = (k + 1) % 4;
                if above[k] == above[j] {
                    return None;
                }
                let t = (level - val[k]) / (val[j] - val[k]);
                Some([pos[k][0] + t * (pos[j][0] - pos[k][0]), pos[k][1] + t * (pos[j][1] - pos[k][1])])
            };
            let edges: Vec<(usize, [f64; 2])> = (0..4).filter_map(|k| crossing(k).map(|p| (k, p))).collect();
            match edges.len() {
                2 => segments.push([edges[0].1, edges[1].1]),
                4 => {
                    // Saddle: cut off the two corners whose state differs from the centre's.
                    // Corner k lies between edge k-1 and edge k.
                    let centre_above = val.iter().sum::<f64>() / 4.0 > level;
                    for k in 0..4 {
                        if above[k] != centre_above {
                            let e_prev = (k + 3) % 4;
                            segments.push([edges[e_prev].1, edges[k].1]);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    segments
}

/// Where the lowest contour level sits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogFloor {
    /// `max − value`, with `max` the largest finite log-density on the grid (the FAB paper clips
    /// the GMM contours 50 nats below the maximum).
    BelowMax(f64),
    /// An absolute log-density.
    Absolute(f64),
}

/// How contours and sample dots are drawn ([`contour_samples_2d`], [`pairwise_marginals`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ContourStyle {
    /// Grid nodes per axis on which the log-density is evaluated (default 150).
    pub grid_points: usize,
    /// Number of equally spaced contour levels between the floor and the maximum (default 20).
    pub levels: usize,
    /// The lowest level; values below it (and non-finite values) are clipped to it.
    pub floor: LogFloor,
    /// Shade the bands between levels with light viridis colours (default `true`); otherwise only
    /// the contour lines are drawn.
    pub filled: bool,
    /// Sample dot radius in pixels (default 2).
    pub point_radius: u32,
    /// Sample dot opacity in `[0, 1]` (default 0.4).
    pub point_alpha: f64,
}

impl Default for ContourStyle {
    fn default() -> Self {
        Self { grid_points: 150, levels: 20, floor: LogFloor::BelowMax(50.0), filled: true, point_radius: 2, point_alpha: 0.4 }
    }
}

/// Contour levels of a clipped log-density grid.
#[derive(Debug, Clone)]
struct Levels {
    floor: f64,
    step: f64,
    values: Vec<f64>,
}

/// Clip the grid to `[floor, max]` (non-finite values to the floor, `+∞` to the maximum) and
/// choose the levels. `None` when the grid has no finite value or no range above the floor.
fn prepare_levels(grid: &mut ScalarGrid, style: &ContourStyle) -> Option<Levels> {
    let max = grid.finite_max()?;
    let floor = match style.floor {
        LogFloor::BelowMax(d) => max - d.abs(),
        LogFloor::Absolute(f) => f,
    };
    for v in &mut grid.values {
        *v = if *v == f64::INFINITY {
            max
        } else if v.is_nan() || *v < floor {
            floor
        } else {
            *v
        };
    }
    if !floor.is_finite() || max - floor <= 0.0 {
        return None;
    }
    // Levels at the centres of n equal slices of [floor, max]: none sits on the clipped plateau
    // at the floor (which would trace the grid) or at the bare maximum.
    let n = style.levels.max(1);
    let step = (max - floor) / n as f64;
    let values = (0..n).map(|k| floor + step * (k as f64 + 0.5)).collect();
    Some(Levels { floor, step, values })
}

/// Shade the bands (when `filled`) and draw the contour lines of a clipped grid.
fn draw_contours(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cart>,
    grid: &ScalarGrid,
    levels: &Levels,
    filled: bool,
    x: &AxisSpec,
    y: &AxisSpec,
) -> Result<()> {
    let n = levels.values.len();
    let t_of = |k: usize| {
        if n > 1 {
            k as f64 / (n - 1) as f64
        } else {
            1.0
        }
    };
    if filled {
        // Band b (1..=n) lies above level b − 1; below the lowest level stays white.
        let band_colours: Vec<[u8; 3]> = (0..n).map(|k| lighten(viridis(t_of(k)), 0.55)).collect();
        fill_pixels(chart, x, y, |xv, yv| {
            let v = grid.interpolate(xv, yv);
            let b = ((v - levels.floor) / levels.step + 0.5).floor();
            (b >= 1.0).then(|| band_colours[(b as usize).min(n) - 1])
        })?;
    }
    for (k, &level) in levels.values.iter().enumerate() {
        let colour = rgb(lighten(viridis(t_of(k)), if filled { 0.0 } else { 0.1 }));
        let style = colour.stroke_width(1);
        let segs = marching_squares(grid, level);
        chart.draw_series(segs.into_iter().map(|s| PathElement::new(vec![(s[0][0], s[0][1]), (s[1][0], s[1][1])], style)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Contours of a 2-D log-density with samples
// ---------------------------------------------------------------------------------------------

/// A rectangle in the plane: `x = [x_min, x_max]`, `y = [y_min, y_max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds2d {
    /// `[min, max]` along the horizontal axis.
    pub x: [f64; 2],
    /// `[min, max]` along the vertical axis.
    pub y: [f64; 2],
}

impl Bounds2d {
    /// The square `[lo, hi]²` (e.g. `[−50, 50]²` for the 40-mode GMM).
    pub fn square(lo: f64, hi: f64) -> Self {
        Self { x: [lo, hi], y: [lo, hi] }
    }
}

/// One panel of [`contour_samples_2d`]: a caption and the samples drawn on the contours.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplePanel {
    /// Panel caption, e.g. `"flow"`, `"AIS"` or `"buffer"`.
    pub title: String,
    /// Sample positions; non-finite points and points outside the bounds are skipped.
    pub points: Vec<[f64; 2]>,
    /// Dot colour (sRGB); red by default.
    pub colour: Option<[u8; 3]>,
}

impl SamplePanel {
    /// A panel with the default dot colour.
    pub fn new(title: impl Into<String>, points: Vec<[f64; 2]>) -> Self {
        Self { title: title.into(), points, colour: None }
    }
}

/// Options of [`contour_samples_2d`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContourOptions {
    /// Image size in pixels; default `(400 · panels, 450)`.
    pub size: Option<(u32, u32)>,
    /// Contour and dot style.
    pub style: ContourStyle,
    /// Axis descriptions, default `["x₁", "x₂"]`.
    pub axis_labels: [String; 2],
}

impl Default for ContourOptions {
    fn default() -> Self {
        Self { size: None, style: ContourStyle::default(), axis_labels: [coordinate_name(0), coordinate_name(1)] }
    }
}

/// A row of panels, each showing contours of `log_density` over `bounds` (evaluated on a grid,
/// clipped below at the floor of `opts.style`) with one panel's samples drawn on top as small
/// translucent dots. The plotting areas are square. Errors when `panels` is empty or `bounds`
/// is not a finite non-empty rectangle; empty or non-finite samples are fine.
pub fn contour_samples_2d(
    path: impl AsRef<Path>,
    title: &str,
    log_density: &dyn Fn(f64, f64) -> f64,
    bounds: Bounds2d,
    panels: &[SamplePanel],
    opts: &ContourOptions,
) -> Result<()> {
    if panels.is_empty() {
        return invalid("contour_samples_2d needs at least one panel");
    }
    check_range("x", bounds.x)?;
    check_range("y", bounds.y)?;
    let n = panels.len();
    let size = opts.size.unwrap_or((400 * n as u32, 450));
    let points_per_axis = opts.style.grid_points.clamp(2, 2000);
    let mut grid = ScalarGrid::evaluate(log_density, bounds.x, bounds.y, points_per_axis, points_per_axis);
    let levels = prepare_levels(&mut grid, &opts.style);
    let x = AxisSpec::linear(bounds.x[0], bounds.x[1], 5, &opts.axis_labels[0]);
    let y = AxisSpec::linear(bounds.y[0], bounds.y[1], 5, &opts.axis_labels[1]);

    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        for (area, panel) in body.split_evenly((1, n)).iter().zip(panels) {
            let frame = PanelFrame { caption: &panel.title, x: x.clone(), y: y.clone(), shape: PlotShape::Square, grid: false };
            let sub = panel_area(area, &frame)?;
            draw_chart(&sub, &frame, |chart| {
                if let Some(levels) = &levels {
                    draw_contours(chart, &grid, levels, opts.style.filled, &x, &y)?;
                }
                let dots = DotStyle {
                    colour: panel.colour.unwrap_or(SAMPLE_COLOUR),
                    alpha: opts.style.point_alpha,
                    radius: opts.style.point_radius,
                };
                draw_points(chart, panel.points.iter().map(|p| (p[0], p[1])), &dots, &x, &y)
            })?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Pairwise 2-D marginals
// ---------------------------------------------------------------------------------------------

/// Options of [`pairwise_marginals`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairwiseOptions {
    /// Image size in pixels; default about 300 pixels per panel and at least 480 per side.
    pub size: Option<(u32, u32)>,
    /// Contour and dot style; the default grid is 100 nodes per axis.
    pub style: ContourStyle,
    /// Dot colour (sRGB); red by default.
    pub colour: Option<[u8; 3]>,
    /// Axis names of the plotted coordinates, one per entry of `dims`; default `x₁, x₂, …`
    /// numbered one-based from the coordinate index (`dims = [0, 1]` gives `x₁`, `x₂`).
    pub names: Option<Vec<String>>,
}

impl Default for PairwiseOptions {
    fn default() -> Self {
        Self { size: None, style: ContourStyle { grid_points: 100, ..ContourStyle::default() }, colour: None, names: None }
    }
}

/// A lower-triangular grid of 2-D marginals of `samples` (each a point with at least
/// `max(dims) + 1` coordinates) for every pair of the listed coordinates: the panel in row `r`
/// and column `c < r` shows coordinate `dims[c]` horizontally and `dims[r]` vertically (rows
/// start at `dims[1]`), over contours of `marginal_log_density(i, j, x_i, x_j)` with
/// `i = dims[c]`, `j = dims[r]`. All axes span `bounds`. The spare top-right cell holds a key.
///
/// For the Many Well target the 2-D marginal of a pair inside one double well is that well's
/// log-density, and for coordinates from different wells it is the sum of the 1-D marginal
/// log-densities. Errors when fewer than two dims are given, `bounds` is invalid or a sample is
/// too short for `dims`.
pub fn pairwise_marginals<S: AsRef<[f64]>>(
    path: impl AsRef<Path>,
    title: &str,
    marginal_log_density: &dyn Fn(usize, usize, f64, f64) -> f64,
    bounds: [f64; 2],
    samples: &[S],
    dims: &[usize],
    opts: &PairwiseOptions,
) -> Result<()> {
    let k = dims.len();
    if k < 2 {
        return invalid("pairwise_marginals needs at least two dims");
    }
    check_range("axis", bounds)?;
    let need = dims.iter().copied().max().unwrap_or(0) + 1;
    if let Some((i, s)) = samples.iter().enumerate().find(|(_, s)| s.as_ref().len() < need) {
        return invalid(format!("sample {i} has {} coordinates but dims needs {need}", s.as_ref().len()));
    }
    let names: Vec<String> = match &opts.names {
        Some(names) if names.len() == k => names.clone(),
        Some(names) => return invalid(format!("{} names given for {k} dims", names.len())),
        None => dims.iter().map(|&d| coordinate_name(d)).collect(),
    };
    let m = k - 1;
    let side = (300 * m as u32).max(480);
    let size = opts.size.unwrap_or((side, side + 40));
    let points_per_axis = opts.style.grid_points.clamp(2, 2000);
    let dots = DotStyle { colour: opts.colour.unwrap_or(SAMPLE_COLOUR), alpha: opts.style.point_alpha, radius: opts.style.point_radius };

    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        let cells = body.split_evenly((m, m));
        for r in 0..m {
            for c in 0..m {
                let area = &cells[r * m + c];
                if c > r {
                    if r == 0 && c == m - 1 {
                        draw_pairwise_key(area, samples.len(), &dots)?;
                    }
                    continue;
                }
                let (di, dj) = (dims[c], dims[r + 1]);
                let x = AxisSpec::linear(bounds[0], bounds[1], 5, &names[c]);
                let y = AxisSpec::linear(bounds[0], bounds[1], 5, &names[r + 1]);
                let f = |a: f64, b: f64| marginal_log_density(di, dj, a, b);
                let mut grid = ScalarGrid::evaluate(&f, bounds, bounds, points_per_axis, points_per_axis);
                let levels = prepare_levels(&mut grid, &opts.style);
                let frame = PanelFrame { caption: "", x: x.clone(), y: y.clone(), shape: PlotShape::Square, grid: false };
                let sub = panel_area(area, &frame)?;
                draw_chart(&sub, &frame, |chart| {
                    if let Some(levels) = &levels {
                        draw_contours(chart, &grid, levels, opts.style.filled, &x, &y)?;
                    }
                    let pts = samples.iter().map(|s| (s.as_ref()[di], s.as_ref()[dj]));
                    draw_points(chart, pts, &dots, &x, &y)
                })?;
            }
        }
        Ok(())
    })
}

/// The key in the empty corner of the pairwise grid.
fn draw_pairwise_key(area: &Area<'_>, n_samples: usize, dots: &DotStyle) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let x0 = (w as i32 / 6).max(10);
    let y0 = (h as i32 / 3).max(20);
    let style = text_style(DESC_PX).pos(Pos::new(HPos::Left, VPos::Center));
    let line_colour = rgb(viridis(0.45));
    area.draw(&PathElement::new(vec![(x0, y0), (x0 + 26, y0)], line_colour.stroke_width(2)))?;
    area.draw_text("target 2-D marginal log p", &style, (x0 + 36, y0))?;
    let y1 = y0 + 30;
    let dot = rgb(dots.colour).mix(dots.alpha.clamp(0.3, 1.0)).filled();
    for dx in [4, 13, 22] {
        area.draw(&Circle::new((x0 + dx, y1), dots.radius.max(2), dot))?;
    }
    area.draw_text(&format!("samples (n = {n_samples})"), &style, (x0 + 36, y1))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Training curves
// ---------------------------------------------------------------------------------------------

/// One line of a [`CurvePanel`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry (shown when the panel has several series).
    pub name: String,
    /// Abscissae, e.g. iterations.
    pub x: Vec<f64>,
    /// Values; non-finite values (and non-positive ones on a log axis) leave gaps.
    pub y: Vec<f64>,
    /// Line colour (sRGB); cycles through [`QUALITATIVE`] by default.
    pub colour: Option<[u8; 3]>,
}

impl Series {
    /// A series with the default colour.
    pub fn new(name: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Self { name: name.into(), x, y, colour: None }
    }
}

/// One panel of [`training_curves`]: one or more series on shared axes.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePanel {
    /// Panel caption, e.g. `"loss"` or `"ESS (AIS)"`.
    pub title: String,
    /// Horizontal axis description (default `"iteration"`).
    pub x_label: String,
    /// Vertical axis description (default empty).
    pub y_label: String,
    /// Logarithmic y-axis; non-positive values are skipped (the axis falls back to linear when
    /// no positive value is left).
    pub log_y: bool,
    /// The lines; a legend is drawn when there are several.
    pub series: Vec<Series>,
    /// Vertical range of a linear axis (default: all the data). Values outside it are drawn on
    /// the edge as open triangles, and the caption says so: a robust range keeps one early or
    /// spiking value from flattening the rest of the curve.
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic x-axis; non-positive abscissae are skipped (linear when none is left).
    pub log_x: bool,
}

impl CurvePanel {
    /// A panel with one series whose name is also the caption.
    pub fn single(name: impl Into<String>, x: Vec<f64>, y: Vec<f64>, log_y: bool) -> Self {
        let name = name.into();
        Self {
            title: name.clone(),
            x_label: "iteration".to_string(),
            y_label: String::new(),
            log_y,
            series: vec![Series::new(name, x, y)],
            y_range: None,
            log_x: false,
        }
    }

    /// A panel with several series.
    pub fn multi(title: impl Into<String>, series: Vec<Series>, log_y: bool) -> Self {
        Self { title: title.into(), x_label: "iteration".to_string(), y_label: String::new(), log_y, series, y_range: None, log_x: false }
    }

    /// Set the vertical range of a linear axis (ignored on a log axis or when `lo < hi` fails).
    pub fn with_y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// Draw the horizontal axis on a log scale (e.g. a budget spanning decades).
    pub fn with_log_x(mut self) -> Self {
        self.log_x = true;
        self
    }

    /// Set the vertical axis description.
    pub fn with_y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Set the horizontal axis description.
    pub fn with_x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }
}

/// Options of [`training_curves`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CurveOptions {
    /// Image size in pixels; default `(400 · columns, 340 · rows + 50)`.
    pub size: Option<(u32, u32)>,
    /// Panels per row; default `min(panels, 3)`.
    pub columns: Option<usize>,
}

/// The legend corner covering the fewest data points (ties: upper right, upper left, lower
/// right, lower left).
fn legend_corner<'p>(points: impl Iterator<Item = &'p (f64, f64)>, x: &AxisSpec, y: &AxisSpec, entries: usize) -> SeriesLabelPosition {
    let (bw, bh) = (0.45, (0.08 + 0.09 * entries as f64).min(0.6));
    let mut counts = [0usize; 4];
    for p in points {
        let fx = (p.0 - x.lo) / (x.hi - x.lo);
        let fy = (p.1 - y.lo) / (y.hi - y.lo);
        let (right, left, top, bottom) = (fx >= 1.0 - bw, fx <= bw, fy >= 1.0 - bh, fy <= bh);
        counts[0] += (right && top) as usize;
        counts[1] += (left && top) as usize;
        counts[2] += (right && bottom) as usize;
        counts[3] += (left && bottom) as usize;
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    [SeriesLabelPosition::UpperRight, SeriesLabelPosition::UpperLeft, SeriesLabelPosition::LowerRight, SeriesLabelPosition::LowerLeft][best]
        .clone()
}

/// Contiguous runs of plottable points (finite, and positive on a log axis), with each
/// coordinate mapped to log10 on a log axis.
fn finite_runs(x: &[f64], y: &[f64], log_x: bool, log_y: bool) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (&a, &b) in x.iter().zip(y) {
        let ok = a.is_finite() && b.is_finite() && (!log_y || b > 0.0) && (!log_x || a > 0.0);
        if ok {
            run.push((if log_x { a.log10() } else { a }, if log_y { b.log10() } else { b }));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Panels of training statistics against iteration (or any abscissa), laid out in rows of
/// `opts.columns`. Non-finite values break the lines; isolated points are drawn as dots.
/// Errors when `panels` is empty or a series has `x.len() != y.len()`.
pub fn training_curves(path: impl AsRef<Path>, title: &str, panels: &[CurvePanel], opts: &CurveOptions) -> Result<()> {
    if panels.is_empty() {
        return invalid("training_curves needs at least one panel");
    }
    for p in panels {
        for s in &p.series {
            if s.x.len() != s.y.len() {
                return invalid(format!(
                    "series '{}' of panel '{}' has {} x values and {} y values",
                    s.name,
                    p.title,
                    s.x.len(),
                    s.y.len()
                ));
            }
        }
    }
    let cols = opts.columns.unwrap_or(3).clamp(1, panels.len());
    let rows = panels.len().div_ceil(cols);
    let size = opts.size.unwrap_or((400 * cols as u32, 340 * rows as u32 + 50));

    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        for (area, panel) in body.split_evenly((rows, cols)).iter().zip(panels) {
            draw_curve_panel(area, panel)?;
        }
        Ok(())
    })
}

/// Series with at most this many points (evaluations, not per-iteration logs) are drawn with a
/// marker on every point.
const MARKED_SERIES_MAX_POINTS: usize = 120;

fn draw_curve_panel(area: &Area<'_>, panel: &CurvePanel) -> Result<()> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let log_y = panel.log_y && panel.series.iter().any(|s| s.x.iter().zip(&s.y).any(|(a, b)| a.is_finite() && positive(*b)));
    let log_x = panel.log_x && panel.series.iter().any(|s| s.x.iter().zip(&s.y).any(|(a, b)| positive(*a) && b.is_finite()));
    let y_range = panel.y_range.filter(|&(lo, hi)| !log_y && lo.is_finite() && hi.is_finite() && lo < hi);
    let mut runs: Vec<Vec<Vec<(f64, f64)>>> = panel.series.iter().map(|s| finite_runs(&s.x, &s.y, log_x, log_y)).collect();
    // Off-scale points move to the edge of a set range, and are remembered for their markers.
    let mut off_scale: Vec<Vec<(f64, f64)>> = vec![Vec::new(); runs.len()];
    if let Some((lo, hi)) = y_range {
        for (runs, off) in runs.iter_mut().zip(off_scale.iter_mut()) {
            for p in runs.iter_mut().flatten() {
                if p.1 < lo || p.1 > hi {
                    p.1 = p.1.clamp(lo, hi);
                    off.push(*p);
                }
            }
        }
    }
    let clipped = off_scale.iter().any(|o| !o.is_empty());
    let all = || runs.iter().flatten().flatten();
    let has_data = all().next().is_some();
    let (x, y) = if has_data {
        let (xl, xh) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.0), h.max(p.0)));
        let (yl, yh) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
        let x = if log_x {
            let (xl, xh) = if xh > xl { padded_range(xl, xh, 0.03) } else { (xl - 0.5, xh + 0.5) };
            AxisSpec::log10(xl, xh, &panel.x_label)
        } else {
            let (xl, xh) = if xh > xl { (xl, xh) } else { padded_range(xl, xh, 0.0) };
            AxisSpec::linear(xl, xh, 5, &panel.x_label)
        };
        let y = if log_y {
            let (yl, yh) = if yh > yl { padded_range(yl, yh, 0.05) } else { (yl - 0.5, yh + 0.5) };
            AxisSpec::log10(yl, yh, &panel.y_label)
        } else if let Some((lo, hi)) = y_range {
            AxisSpec::linear(lo, hi, 5, &panel.y_label)
        } else {
            let (yl, yh) = padded_range(yl, yh, 0.05);
            AxisSpec::linear(yl, yh, 5, &panel.y_label)
        };
        (x, y)
    } else {
        (AxisSpec::linear(0.0, 1.0, 5, &panel.x_label), AxisSpec::linear(0.0, 1.0, 5, &panel.y_label))
    };
    let legend = panel.series.len() > 1;
    let corner = legend_corner(all(), &x, &y, panel.series.len());
    let caption = if clipped { format!("{} (triangles: off scale)", panel.title) } else { panel.title.clone() };
    let frame = PanelFrame { caption: &caption, x, y, shape: PlotShape::Fill, grid: true };
    let sub = panel_area(area, &frame)?;
    draw_chart(&sub, &frame, |chart| {
        if !has_data {
            note_in_panel(chart, "no finite data")?;
        }
        for (i, (series, runs)) in panel.series.iter().zip(&runs).enumerate() {
            let colour = rgb(series.colour.unwrap_or(QUALITATIVE[i % QUALITATIVE.len()]));
            // Long, noisy series read better with thin lines.
            let points: usize = runs.iter().map(Vec::len).sum();
            let line = colour.stroke_width(if points > 300 { 1 } else { 2 });
            if legend {
                chart
                    .draw_series(LineSeries::new(std::iter::empty::<(f64, f64)>(), line))?
                    .label(series.name.as_str())
                    .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 22, py)], line));
            }
            for run in runs {
                if run.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(run[0], 3, colour.filled())))?;
                } else {
                    chart.draw_series(LineSeries::new(run.iter().copied(), line))?;
                }
            }
            // Sparse series (evaluations) get a marker on every point.
            if (2..=MARKED_SERIES_MAX_POINTS).contains(&points) {
                chart.draw_series(runs.iter().flatten().map(|&p| Circle::new(p, 2, colour.filled())))?;
            }
            chart.draw_series(off_scale[i].iter().map(|&p| TriangleMarker::new(p, 5, colour.stroke_width(1))))?;
        }
        if legend {
            chart
                .configure_series_labels()
                .position(corner)
                .margin(8)
                .legend_area_size(28)
                .label_font(text_style(TICK_PX))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------------------------

/// Bin of `v` among `bins` equal bins of the closed interval `[lo, hi]` (the last bin includes
/// `hi`); `None` outside it or when `v` is not finite.
/// Bin of `v` among `bins` equal bins of the closed interval [lo, hi], with numpy's edge rule:
/// every bin is half-open [eᵢ, eᵢ₊₁) except the last, which includes `hi`; `None` outside the
/// range or for NaN. The fast index is corrected by exact comparison with the edges, so values
/// on an edge land where numpy puts them. This is the project's one binning rule (plots and the
/// histogram metrics both use it).
pub fn bin_index(v: f64, lo: f64, hi: f64, bins: usize) -> Option<usize> {
    if !(v >= lo && v <= hi) || bins == 0 {
        return None;
    }
    let width = (hi - lo) / bins as f64;
    let edge = |i: usize| if i == bins { hi } else { lo + width * i as f64 };
    let mut i = (((v - lo) / (hi - lo)) * bins as f64).floor() as usize;
    i = i.min(bins - 1);
    if v < edge(i) && i > 0 {
        i -= 1;
    } else if i + 1 < bins && v >= edge(i + 1) {
        i += 1;
    }
    Some(i)
}

fn check_weights(weights: Option<&[f64]>, n: usize, what: &str) -> Result<()> {
    match weights {
        Some(w) if w.len() != n => invalid(format!("{} weights for {n} {what}", w.len())),
        _ => Ok(()),
    }
}

fn check_bins(bins: usize) -> Result<()> {
    if (1..=10_000).contains(&bins) {
        Ok(())
    } else {
        invalid(format!("bins = {bins} must be between 1 and 10000"))
    }
}

/// A 1-D histogram of weighted values over a closed range.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram1d {
    /// `[lo, hi]`; bins are `[lo + i·w, lo + (i+1)·w)` with the last one closed at `hi`.
    pub range: [f64; 2],
    /// Total weight per bin.
    pub counts: Vec<f64>,
    /// Total weight of the binned values.
    pub total: f64,
    /// Values not binned: non-finite, outside the range, or with a non-finite or negative weight.
    pub dropped: usize,
}

impl Histogram1d {
    /// Bin width.
    pub fn bin_width(&self) -> f64 {
        (self.range[1] - self.range[0]) / self.counts.len() as f64
    }

    /// Probability densities per bin (integrating to one over the range; zeros when empty),
    /// count / (total · (hi − lo) / bins), as `numpy.histogram(…, density=True)`.
    pub fn densities(&self) -> Vec<f64> {
        let norm = self.total * (self.range[1] - self.range[0]) / self.counts.len() as f64;
        self.counts.iter().map(|c| if norm > 0.0 { c / norm } else { 0.0 }).collect()
    }

    /// Bin edges, `bins + 1` of them.
    pub fn edges(&self) -> Vec<f64> {
        let w = self.bin_width();
        (0..=self.counts.len()).map(|i| self.range[0] + w * i as f64).collect()
    }
}

/// Histogram `values` (optionally weighted, e.g. by importance weights that need not be
/// normalised) into `bins` equal bins of the closed interval `range`. Values at `range[1]` go to
/// the last bin. Non-finite values, values outside the range and values whose weight is
/// negative or not finite are dropped and counted in [`Histogram1d::dropped`].
pub fn histogram_1d(values: &[f64], weights: Option<&[f64]>, range: [f64; 2], bins: usize) -> Result<Histogram1d> {
    check_range("histogram", range)?;
    check_bins(bins)?;
    check_weights(weights, values.len(), "values")?;
    let mut h = Histogram1d { range, counts: vec![0.0; bins], total: 0.0, dropped: 0 };
    for (i, &v) in values.iter().enumerate() {
        let w = weights.map_or(1.0, |w| w[i]);
        match bin_index(v, range[0], range[1], bins) {
            Some(b) if w.is_finite() && w >= 0.0 => {
                h.counts[b] += w;
                h.total += w;
            }
            _ => h.dropped += 1,
        }
    }
    Ok(h)
}

/// A 2-D histogram of weighted points over a closed rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram2d {
    /// `[lo, hi]` along x (closed at `hi`, like [`Histogram1d`]).
    pub x_range: [f64; 2],
    /// `[lo, hi]` along y.
    pub y_range: [f64; 2],
    /// Number of bins along x and y.
    pub bins: [usize; 2],
    /// Total weight per bin, `counts[ix * bins[1] + iy]`.
    pub counts: Vec<f64>,
    /// Total weight of the binned points.
    pub total: f64,
    /// Points not binned: a non-finite coordinate, outside the rectangle, or a non-finite or
    /// negative weight.
    pub dropped: usize,
}

impl Histogram2d {
    /// Total weight in bin `(ix, iy)`. Panics when the bin is outside the histogram.
    pub fn count(&self, ix: usize, iy: usize) -> f64 {
        self.counts[ix * self.bins[1] + iy]
    }

    /// Area of one bin.
    pub fn bin_area(&self) -> f64 {
        ((self.x_range[1] - self.x_range[0]) / self.bins[0] as f64) * ((self.y_range[1] - self.y_range[0]) / self.bins[1] as f64)
    }

    /// Probability densities per bin, same layout as `counts` (integrating to one; zeros when
    /// empty).
    pub fn densities(&self) -> Vec<f64> {
        let norm = self.total * self.bin_area();
        self.counts.iter().map(|c| if norm > 0.0 { c / norm } else { 0.0 }).collect()
    }

    /// The bin holding `(x, y)`, if any.
    pub fn bin_of(&self, x: f64, y: f64) -> Option<(usize, usize)> {
        Some((bin_index(x, self.x_range[0], self.x_range[1], self.bins[0])?, bin_index(y, self.y_range[0], self.y_range[1], self.bins[1])?))
    }
}

/// Histogram the points `(x[i], y[i])`, optionally weighted, into `bins[0] × bins[1]` equal bins
/// of the closed rectangle `x_range × y_range`. Dropping rules as [`histogram_1d`].
pub fn histogram_2d(
    x: &[f64],
    y: &[f64],
    weights: Option<&[f64]>,
    x_range: [f64; 2],
    y_range: [f64; 2],
    bins: [usize; 2],
) -> Result<Histogram2d> {
    check_range("x", x_range)?;
    check_range("y", y_range)?;
    check_bins(bins[0])?;
    check_bins(bins[1])?;
    if bins[0] * bins[1] > 1 << 24 {
        return invalid(format!("{} x {} bins are too many", bins[0], bins[1]));
    }
    if x.len() != y.len() {
        return invalid(format!("{} x values and {} y values", x.len(), y.len()));
    }
    check_weights(weights, x.len(), "points")?;
    let mut h = Histogram2d { x_range, y_range, bins, counts: vec![0.0; bins[0] * bins[1]], total: 0.0, dropped: 0 };
    for i in 0..x.len() {
        let w = weights.map_or(1.0, |w| w[i]);
        match h.bin_of(x[i], y[i]) {
            Some((ix, iy)) if w.is_finite() && w >= 0.0 => {
                h.counts[ix * bins[1] + iy] += w;
                h.total += w;
            }
            _ => h.dropped += 1,
        }
    }
    Ok(h)
}

/// Map an angle into `[−π, π]`: angles already in the closed interval are returned unchanged
/// (so both `−π` and `π` stay as they are), others are shifted by a multiple of `2π` into
/// `[−π, π)`. Non-finite input is returned unchanged.
pub fn wrap_angle(a: f64) -> f64 {
    if !a.is_finite() || (-PI..=PI).contains(&a) {
        a
    } else {
        (a + PI).rem_euclid(2.0 * PI) - PI
    }
}

/// The Ramachandran histogram: `(φ, ψ)` pairs wrapped into `[−π, π]` by [`wrap_angle`] and
/// binned into `bins × bins` bins of `[−π, π]²` (φ along x). A point at exactly `−π` falls in
/// the first bin and one at `+π` in the last. Weights as for [`histogram_1d`].
pub fn ramachandran_histogram(phi: &[f64], psi: &[f64], weights: Option<&[f64]>, bins: usize) -> Result<Histogram2d> {
    if phi.len() != psi.len() {
        return invalid(format!("{} φ values and {} ψ values", phi.len(), psi.len()));
    }
    let phi: Vec<f64> = phi.iter().map(|&a| wrap_angle(a)).collect();
    let psi: Vec<f64> = psi.iter().map(|&a| wrap_angle(a)).collect();
    histogram_2d(&phi, &psi, weights, [-PI, PI], [-PI, PI], [bins, bins])
}

// ---------------------------------------------------------------------------------------------
// 4. Ramachandran plots
// ---------------------------------------------------------------------------------------------

/// One panel of [`ramachandran_panels`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RamachandranPanel<'a> {
    /// Panel caption, e.g. `"flow (reweighted)"`.
    pub title: &'a str,
    /// Dihedral angles φ in radians.
    pub phi: &'a [f64],
    /// Dihedral angles ψ in radians, same length as `phi`.
    pub psi: &'a [f64],
    /// Optional non-negative importance weights (need not be normalised).
    pub weights: Option<&'a [f64]>,
}

/// Options of [`ramachandran`] and [`ramachandran_panels`].
#[derive(Debug, Clone, PartialEq)]
pub struct RamachandranOptions {
    /// Image size in pixels; default `(340 · panels + 110, 400)` (`(520, 430)` for
    /// [`ramachandran`]).
    pub size: Option<(u32, u32)>,
    /// Bins per axis (default 64).
    pub bins: usize,
    /// Decades of density shown by the colour scale below the maximum (default 5); denser bins
    /// below that get the lowest colour, empty bins stay white.
    pub decades: f64,
}

impl Default for RamachandranOptions {
    fn default() -> Self {
        Self { size: None, bins: 64, decades: 5.0 }
    }
}

/// A Ramachandran plot of one sample set: see [`ramachandran_panels`].
pub fn ramachandran(
    path: impl AsRef<Path>,
    title: &str,
    phi: &[f64],
    psi: &[f64],
    weights: Option<&[f64]>,
    opts: &RamachandranOptions,
) -> Result<()> {
    let panel = RamachandranPanel { title: "", phi, psi, weights };
    let opts = RamachandranOptions { size: Some(opts.size.unwrap_or((520, 430))), ..opts.clone() };
    ramachandran_panels(path, title, &[panel], &opts)
}

/// Ramachandran plots side by side (e.g. reference, flow, flow reweighted, AIS, AIS reweighted):
/// each panel is a 2-D histogram of `(φ, ψ)` on `[−π, π]²` ([`ramachandran_histogram`])
/// coloured by log10 of the probability density with viridis, on one colour scale shared by all
/// panels and shown as a colour bar; empty bins are white. Ticks at `−π, −π/2, 0, π/2, π`.
/// Errors when `panels` is empty, `opts.bins` is 0 or lengths mismatch.
pub fn ramachandran_panels(
    path: impl AsRef<Path>,
    title: &str,
    panels: &[RamachandranPanel<'_>],
    opts: &RamachandranOptions,
) -> Result<()> {
    if panels.is_empty() {
        return invalid("ramachandran_panels needs at least one panel");
    }
    let hists: Vec<Histogram2d> =
        panels.iter().map(|p| ramachandran_histogram(p.phi, p.psi, p.weights, opts.bins)).collect::<Result<_>>()?;
    let dens: Vec<Vec<f64>> = hists.iter().map(Histogram2d::densities).collect();
    let logs = dens.iter().flatten().filter(|d| **d > 0.0).map(|d| d.log10());
    let (lmin, lmax) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let scale = if lmax.is_finite() {
        let lo = lmin.max(lmax - opts.decades.abs().max(0.5));
        Some(if lmax - lo < 1e-9 { (lmax - 1.0, lmax) } else { (lo, lmax) })
    } else {
        None
    };

    let n = panels.len();
    const BAR_COLUMN: u32 = 110;
    let size = opts.size.unwrap_or((340 * n as u32 + BAR_COLUMN, 400));
    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        let (w, _) = body.dim_in_pixel();
        let (panels_area, bar_area) = body.split_horizontally(w.saturating_sub(BAR_COLUMN));
        let plot_rows: Cell<Option<Range<i32>>> = Cell::new(None);
        for (i, area) in panels_area.split_evenly((1, n)).iter().enumerate() {
            let x = AxisSpec::angle("φ (rad)");
            let y = AxisSpec::angle("ψ (rad)");
            let frame = PanelFrame { caption: panels[i].title, x: x.clone(), y: y.clone(), shape: PlotShape::Square, grid: false };
            let (h, d) = (&hists[i], &dens[i]);
            let sub = panel_area(area, &frame)?;
            draw_chart(&sub, &frame, |chart| {
                if i == 0 {
                    plot_rows.set(Some(chart.plotting_area().get_pixel_range().1));
                }
                if let Some((lo, hi)) = scale {
                    fill_pixels(chart, &x, &y, |a, b| {
                        let (ix, iy) = h.bin_of(a, b)?;
                        let v = d[ix * h.bins[1] + iy];
                        (v > 0.0).then(|| viridis((v.log10() - lo) / (hi - lo)))
                    })?;
                }
                if h.total <= 0.0 {
                    note_in_panel(chart, "no data")?;
                }
                Ok(())
            })?;
        }
        if let (Some((lo, hi)), Some(rows)) = (scale, plot_rows.take()) {
            draw_colour_bar(&bar_area, rows, &AxisSpec::log10(lo, hi, "density"))?;
        }
        Ok(())
    })
}

/// A vertical viridis colour bar for the values `axis.lo..axis.hi` (log10 values for a
/// [`AxisSpec::log10`] axis, labelled with powers of ten) spanning the absolute pixel rows `rows`,
/// with tick labels and the axis description rotated beside them.
fn draw_colour_bar(area: &Area<'_>, rows: Range<i32>, axis: &AxisSpec) -> Result<()> {
    let base = area.get_base_pixel();
    let (y0, y1) = (rows.start - base.1, rows.end - base.1);
    let (lo, hi) = (axis.lo, axis.hi);
    if y1 - y0 < 8 || !(hi - lo).is_finite() || hi <= lo {
        return Ok(());
    }
    let (x0, x1) = (10, 28);
    for py in y0..y1 {
        let t = (y1 - 1 - py) as f64 / (y1 - y0 - 1).max(1) as f64;
        let c = rgb(viridis(t));
        area.draw(&PathElement::new(vec![(x0, py), (x1, py)], c.stroke_width(1)))?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))?;
    let style = text_style(TICK_PX).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widest = 0;
    for &v in &axis.ticks {
        let py = y1 - ((v - lo) / (hi - lo) * (y1 - y0) as f64).round() as i32;
        let text = axis.format(v);
        widest = widest.max(area.estimate_text_size(&text, &style)?.0 as i32);
        area.draw(&PathElement::new(vec![(x1, py), (x1 + 5, py)], BLACK.stroke_width(1)))?;
        area.draw_text(&text, &style, (x1 + 8, py))?;
    }
    let desc = centred(text_style(DESC_PX)).transform(FontTransform::Rotate270);
    area.draw_text(&axis.label, &desc, (x1 + 58.max(8 + widest + 18), (y0 + y1) / 2))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. 1-D histograms on a log scale
// ---------------------------------------------------------------------------------------------

/// One histogram of [`histogram_1d_log`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramSeries<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// The values.
    pub values: &'a [f64],
    /// Optional non-negative importance weights (need not be normalised).
    pub weights: Option<&'a [f64]>,
    /// Line colour (sRGB); cycles through [`QUALITATIVE`] by default.
    pub colour: Option<[u8; 3]>,
}

impl<'a> HistogramSeries<'a> {
    /// An unweighted series with the default colour.
    pub fn new(name: &'a str, values: &'a [f64]) -> Self {
        Self { name, values, weights: None, colour: None }
    }

    /// Attach importance weights.
    pub fn weighted(mut self, weights: &'a [f64]) -> Self {
        self.weights = Some(weights);
        self
    }
}

/// Options of [`histogram_1d_log`].
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram1dOptions {
    /// Image size in pixels; default `(800, 520)`.
    pub size: Option<(u32, u32)>,
    /// Horizontal axis description (default `"x"`; `"φ (rad)"` for the φ marginal).
    pub x_label: String,
    /// Vertical axis description (default `"density"`).
    pub y_label: String,
    /// Show at most this many decades below the highest density; lower bins are left as gaps
    /// (default `None`: everything). Re-weighted histograms can have bins at 10⁻³⁰⁰ that would
    /// otherwise squash the interesting range.
    pub max_decades: Option<f64>,
}

impl Default for Histogram1dOptions {
    fn default() -> Self {
        Self { size: None, x_label: "x".to_string(), y_label: "density".to_string(), max_decades: None }
    }
}

/// Overlaid step-line density histograms ([`histogram_1d`], each normalised to integrate to one
/// over `range`) on a logarithmic y-axis; empty bins leave gaps. A range of `[−π, π]` gets ticks
/// at multiples of π/2. Errors when `series` is empty, `range` is invalid, `bins` is 0 or
/// weights have the wrong length.
pub fn histogram_1d_log(
    path: impl AsRef<Path>,
    title: &str,
    series: &[HistogramSeries<'_>],
    range: [f64; 2],
    bins: usize,
    opts: &Histogram1dOptions,
) -> Result<()> {
    if series.is_empty() {
        return invalid("histogram_1d_log needs at least one series");
    }
    let hists: Vec<Histogram1d> = series.iter().map(|s| histogram_1d(s.values, s.weights, range, bins)).collect::<Result<_>>()?;
    let mut dens: Vec<Vec<f64>> = hists.iter().map(Histogram1d::densities).collect();
    if let Some(decades) = opts.max_decades {
        let top = dens.iter().flatten().copied().fold(0.0_f64, f64::max);
        let floor = top * 10f64.powf(-decades.max(0.0));
        for d in dens.iter_mut().flatten() {
            if *d < floor {
                *d = 0.0;
            }
        }
    }
    let logs = dens.iter().flatten().filter(|d| **d > 0.0).map(|d| d.log10());
    let (lmin, lmax) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let is_angle = (range[0] + PI).abs() < 1e-6 && (range[1] - PI).abs() < 1e-6;
    let x = if is_angle { AxisSpec::angle(&opts.x_label) } else { AxisSpec::linear(range[0], range[1], 6, &opts.x_label) };
    let y = if lmax.is_finite() {
        let span = (lmax - lmin).max(1.0);
        AxisSpec::log10(lmin - 0.06 * span, lmax + 0.1 * span, &opts.y_label)
    } else {
        AxisSpec::log10(-1.0, 1.0, &opts.y_label)
    };
    let size = opts.size.unwrap_or((800, 520));
    let runs: Vec<Vec<Vec<(f64, f64)>>> = hists.iter().zip(&dens).map(|(h, d)| step_runs(&h.edges(), d)).collect();
    let corner = legend_corner(runs.iter().flatten().flatten(), &x, &y, series.len());

    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        let frame = PanelFrame { caption: "", x, y, shape: PlotShape::Fill, grid: true };
        let sub = panel_area(&body, &frame)?;
        draw_chart(&sub, &frame, |chart| {
            if !lmax.is_finite() {
                note_in_panel(chart, "no data")?;
            }
            for (i, (s, runs)) in series.iter().zip(&runs).enumerate() {
                let colour = rgb(s.colour.unwrap_or(QUALITATIVE[i % QUALITATIVE.len()]));
                let line = colour.stroke_width(2);
                chart
                    .draw_series(LineSeries::new(std::iter::empty::<(f64, f64)>(), line))?
                    .label(s.name)
                    .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 22, py)], line));
                for run in runs {
                    chart.draw_series(LineSeries::new(run.iter().copied(), line))?;
                }
            }
            chart
                .configure_series_labels()
                .position(corner)
                .margin(10)
                .legend_area_size(28)
                .label_font(text_style(TICK_PX))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
            Ok(())
        })
    })
}

/// Step polylines `(x, log10 density)` over runs of consecutive non-empty bins.
fn step_runs(edges: &[f64], dens: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    for (i, &d) in dens.iter().enumerate() {
        if d > 0.0 && d.is_finite() {
            let ly = d.log10();
            run.push((edges[i], ly));
            run.push((edges[i + 1], ly));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// 6. Heat maps of distributions on grids
// ---------------------------------------------------------------------------------------------

/// One panel of [`heatmaps`]: a `rows × cols` array of non-negative values (e.g. the
/// probabilities of the states of a grid world), row-major: cell `(i, j)` is
/// `values[i * cols + j]`, for `i < rows` and `j < cols`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatPanel {
    /// Panel caption, e.g. `"target"`, `"student"` or `"teacher"`.
    pub title: String,
    /// Number of values along the first coordinate `i` (the horizontal axis).
    pub rows: usize,
    /// Number of values along the second coordinate `j` (the vertical axis).
    pub cols: usize,
    /// `rows · cols` finite, non-negative values, `values[i * cols + j]` for cell `(i, j)`.
    pub values: Vec<f64>,
}

impl HeatPanel {
    /// A panel of `rows × cols` values, row-major.
    pub fn new(title: impl Into<String>, rows: usize, cols: usize, values: Vec<f64>) -> Self {
        Self { title: title.into(), rows, cols, values }
    }
}

/// Options of [`heatmaps`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapOptions {
    /// Image size in pixels; default `(380 · panels + 110, 410)` with a shared colour scale and
    /// `(490 · panels, 410)` without.
    pub size: Option<(u32, u32)>,
    /// One colour scale for all panels, drawn once at the right (default `true`); otherwise each
    /// panel gets its own scale and colour bar.
    pub shared_scale: bool,
    /// Colour by log10 of the value (default `true`); otherwise linearly from 0 to the maximum.
    pub log_scale: bool,
    /// On a log scale, the decades shown below the maximum (default 6): values at or below
    /// `max · 10^−decades`, zeros included, get the lowest colour. When every value is positive
    /// and within that range the scale starts at the smallest value instead. Must be in
    /// `(0, 1000]`.
    pub decades: f64,
    /// Description of the colour bar (default `"probability"`).
    pub colour_bar_label: String,
    /// Descriptions of the horizontal (first coordinate, `i`) and vertical (second coordinate,
    /// `j`) axes; default `["i", "j"]`.
    pub axis_labels: [String; 2],
}

impl Default for HeatmapOptions {
    fn default() -> Self {
        Self {
            size: None,
            shared_scale: true,
            log_scale: true,
            decades: 6.0,
            colour_bar_label: "probability".to_string(),
            axis_labels: ["i".to_string(), "j".to_string()],
        }
    }
}

/// Most cells in one heat-map panel (4096 × 4096).
const MAX_HEAT_CELLS: usize = 1 << 24;

/// Check the panels of [`heatmaps`], naming the panel and the offending cell.
fn check_heat_panels(panels: &[HeatPanel]) -> Result<()> {
    if panels.is_empty() {
        return invalid("heatmaps needs at least one panel");
    }
    for (k, p) in panels.iter().enumerate() {
        let name = format!("heat-map panel {k} ('{}')", p.title);
        if p.rows == 0 || p.cols == 0 {
            return invalid(format!("{name} has {} rows and {} cols; both must be positive", p.rows, p.cols));
        }
        let cells = match p.rows.checked_mul(p.cols) {
            Some(n) if n <= MAX_HEAT_CELLS => n,
            _ => return invalid(format!("{name} has {} x {} cells, more than the {MAX_HEAT_CELLS} allowed", p.rows, p.cols)),
        };
        if p.values.len() != cells {
            return invalid(format!("{name} has {} values for {} x {} = {cells} cells", p.values.len(), p.rows, p.cols));
        }
        if let Some((idx, v)) = p.values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return invalid(format!(
                "{name} has value {v} at index {idx}, cell ({}, {}); values must be finite and non-negative",
                idx / p.cols,
                idx % p.cols
            ));
        }
    }
    Ok(())
}

/// The colour scale of a set of values, in the units the colours are interpolated in (log10 of
/// the value on a log scale): `(lo, hi)` with `lo < hi`, or `None` when no value is positive.
fn heat_scale<'v>(values: impl Iterator<Item = &'v f64> + Clone, log: bool, decades: f64) -> Option<(f64, f64)> {
    let max = values.clone().copied().fold(0.0_f64, f64::max);
    if max <= 0.0 {
        return None;
    }
    if !log {
        return Some((0.0, max));
    }
    let hi = max.log10();
    let floor = hi - decades;
    let lmin = values.clone().filter(|v| **v > 0.0).map(|v| v.log10()).fold(f64::INFINITY, f64::min);
    let has_zero = values.into_iter().any(|v| *v <= 0.0);
    let lo = if has_zero || lmin <= floor { floor } else { lmin };
    Some(if hi - lo < 1e-9 { (hi - 1.0, hi) } else { (lo, hi) })
}

/// The colour of `v` on the scale `(lo, hi)` (see [`heat_scale`]): values at or below the bottom
/// of the scale, zeros included, get the lowest colour.
fn heat_colour(v: f64, scale: Option<(f64, f64)>, log: bool) -> [u8; 3] {
    match scale {
        Some((lo, hi)) if v > 0.0 => {
            let u = if log { v.log10() } else { v };
            viridis((u - lo) / (hi - lo))
        }
        _ => viridis(0.0),
    }
}

/// An axis over `n` grid cells: cell `k` spans `[k − ½, k + ½]`, so integer ticks sit at cell
/// centres, spaced 1, 2, 5, 10, 20, 50, … apart (at most eight of them).
fn cell_axis(n: usize, label: &str) -> AxisSpec {
    let span = n.saturating_sub(1);
    let (mut step, mut k) = (1usize, 0u32);
    while span / step >= 8 {
        k += 1;
        step = [1, 2, 5][(k % 3) as usize] * 10usize.pow(k / 3);
    }
    let ticks = (0..n).step_by(step).map(|k| k as f64).collect();
    AxisSpec {
        lo: -0.5,
        hi: n as f64 - 0.5,
        ticks,
        minor: Vec::new(),
        kind: TickKind::Linear { step: step as f64 },
        label: label.to_string(),
    }
}

/// Index of the cell holding coordinate `v` on a [`cell_axis`] over `n` cells.
fn cell_of(v: f64, n: usize) -> usize {
    ((v + 0.5).floor().max(0.0) as usize).min(n - 1)
}

/// Heat maps of distributions on 2-D grids side by side, e.g. the target, student and teacher
/// distributions of an `H × H` grid world. Each panel colours cell `(i, j)` of its
/// [`HeatPanel`] with viridis; the first coordinate `i` runs along the horizontal axis and the
/// second `j` up the vertical axis, origin at the bottom left, so the grid state `(s₀, s₁)` is
/// drawn at `(s₀, s₁)`. Axis ticks are integer cell coordinates at cell centres.
///
/// Cells are square and all panels of one shape are drawn the same size, in one row under
/// `title`; colours follow `opts` (a log10 scale shared by all panels by default, see
/// [`HeatmapOptions`]) and a colour bar shows the scale, labelled `10ⁿ` on a log scale. A panel
/// (or figure, with a shared scale) whose values are all zero is drawn in the lowest colour with
/// a note and no colour bar. Pixels are filled directly, so 256 × 256 grids are cheap.
///
/// Errors when `panels` is empty, or a panel has zero rows or cols, `values.len() != rows ·
/// cols`, or a negative or non-finite value (the message names the panel, index and cell), or
/// `opts.decades` is not in `(0, 1000]` on a log scale.
pub fn heatmaps(path: impl AsRef<Path>, title: &str, panels: &[HeatPanel], opts: &HeatmapOptions) -> Result<()> {
    check_heat_panels(panels)?;
    if opts.log_scale && !(opts.decades > 0.0 && opts.decades <= 1000.0) {
        return invalid(format!("decades = {} must be in (0, 1000] for a log colour scale", opts.decades));
    }
    let log = opts.log_scale;
    let shared = heat_scale(panels.iter().flat_map(|p| &p.values), log, opts.decades);
    let scales: Vec<Option<(f64, f64)>> =
        panels.iter().map(|p| if opts.shared_scale { shared } else { heat_scale(p.values.iter(), log, opts.decades) }).collect();
    let colour_axis = |(lo, hi): (f64, f64)| {
        if log {
            AxisSpec::log10(lo, hi, &opts.colour_bar_label)
        } else {
            AxisSpec::linear(lo, hi, 5, &opts.colour_bar_label)
        }
    };

    let n = panels.len();
    const BAR_COLUMN: u32 = 110;
    const SLOT: u32 = 380;
    let size =
        opts.size.unwrap_or(if opts.shared_scale { (SLOT * n as u32 + BAR_COLUMN, 410) } else { ((SLOT + BAR_COLUMN) * n as u32, 410) });
    render(path.as_ref(), size, |root| {
        let body = split_title(root, title, TITLE_PX)?;
        let (w, _) = body.dim_in_pixel();
        let (panels_area, shared_bar) = if opts.shared_scale {
            let (a, b) = body.split_horizontally(w.saturating_sub(BAR_COLUMN));
            (a, Some(b))
        } else {
            (body, None)
        };
        let mut first_rows = None;
        for ((slot, panel), scale) in panels_area.split_evenly((1, n)).iter().zip(panels).zip(&scales) {
            let (area, own_bar) = if opts.shared_scale {
                (slot.clone(), None)
            } else {
                let (sw, _) = slot.dim_in_pixel();
                let (a, b) = slot.split_horizontally(sw.saturating_sub(BAR_COLUMN));
                (a, Some(b))
            };
            let x = cell_axis(panel.rows, &opts.axis_labels[0]);
            let y = cell_axis(panel.cols, &opts.axis_labels[1]);
            let shape = PlotShape::Cells { x: panel.rows, y: panel.cols };
            let frame = PanelFrame { caption: &panel.title, x: x.clone(), y: y.clone(), shape, grid: false };
            let colours: Vec<[u8; 3]> = panel.values.iter().map(|&v| heat_colour(v, *scale, log)).collect();
            let sub = panel_area(&area, &frame)?;
            let rows: Cell<Option<Range<i32>>> = Cell::new(None);
            draw_chart(&sub, &frame, |chart| {
                rows.set(Some(chart.plotting_area().get_pixel_range().1));
                fill_pixels(chart, &x, &y, |a, b| Some(colours[cell_of(a, panel.rows) * panel.cols + cell_of(b, panel.cols)]))?;
                if scale.is_none() {
                    note_in_panel(chart, "all values are zero")?;
                }
                Ok(())
            })?;
            let rows = rows.take();
            first_rows = first_rows.or(rows.clone());
            if let (Some(bar), Some(rows), Some(scale)) = (own_bar, rows, scale) {
                draw_colour_bar(&bar, rows, &colour_axis(*scale))?;
            }
        }
        if let (Some(bar), Some(rows), Some(scale)) = (shared_bar, first_rows, shared) {
            draw_colour_bar(&bar, rows, &colour_axis(scale))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside() {
        let (t, step) = nice_ticks(-50.0, 50.0, 5);
        assert_eq!(step, 20.0);
        assert_eq!(t, vec![-40.0, -20.0, 0.0, 20.0, 40.0]);
        let (t, step) = nice_ticks(0.0, 1.0, 5);
        assert_eq!(step, 0.25);
        assert_eq!(t, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(format_tick(t[3], step), "0.75");
        let (t, step) = nice_ticks(-0.3, 55.0, 5);
        assert_eq!(step, 10.0);
        assert_eq!(t.len(), 6);
        assert_eq!(format_tick(t[1], step), "10");
        let (t, step) = nice_ticks(0.0, 1.0, 6);
        assert_eq!((t.len(), step), (6, 0.2));
        assert_eq!(format_tick(t[3], step), "0.6");
        assert_eq!(format_tick(-2.5, 2.5), "\u{2212}2.5");
        assert!(nice_ticks(1.0, 1.0, 5).0.is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).0.is_empty());
    }

    #[test]
    fn tick_labels() {
        assert_eq!(pi_label(-PI), "\u{2212}π");
        assert_eq!(pi_label(PI / 2.0), "π/2");
        assert_eq!(pi_label(0.0), "0");
        let axis = AxisSpec::log10(-3.2, 0.4, "");
        assert_eq!(axis.ticks, vec![-3.0, -2.0, -1.0, 0.0]);
        assert_eq!(axis.format(-3.0), "10\u{207B}\u{00B3}");
        assert_eq!(axis.format(0.0), "10\u{2070}");
        let narrow = AxisSpec::log10(-0.5, -0.1, "");
        assert!(narrow.ticks.len() >= 2, "{:?}", narrow.ticks);
        let one_decade = AxisSpec::log10(-0.2, 0.8, "");
        let labels: Vec<String> = one_decade.ticks.iter().map(|&t| one_decade.format(t)).collect();
        assert_eq!(labels, vec!["1", "2", "5"]);
        assert_eq!(format_sig(0.5, 2), "0.5");
        assert_eq!(subscript(12), "\u{2081}\u{2082}");
    }

    #[test]
    fn finite_runs_split_at_gaps() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, f64::NAN, 2.0, 3.0, -1.0, 4.0];
        // −1 is plottable on a linear axis, not on a log axis.
        assert_eq!(finite_runs(&x, &y, false, false).len(), 2);
        let log = finite_runs(&x, &y, false, true);
        assert_eq!(log.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 2, 1]);
        // On a log x-axis the abscissa 0 is dropped and the others map to log10.
        let log_x = finite_runs(&x, &[1.0; 6], true, false);
        assert_eq!(log_x, vec![vec![(0.0, 1.0), (2f64.log10(), 1.0), (3f64.log10(), 1.0), (4f64.log10(), 1.0), (5f64.log10(), 1.0)]]);
    }

    #[test]
    fn heat_map_axes_and_scales() {
        let ticks = |n: usize| cell_axis(n, "").ticks;
        assert_eq!(ticks(1), vec![0.0]);
        assert_eq!(ticks(4), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(ticks(8), (0..8).map(f64::from).collect::<Vec<_>>());
        assert_eq!(ticks(10), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(64), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(ticks(256), vec![0.0, 50.0, 100.0, 150.0, 200.0, 250.0]);
        let axis = cell_axis(64, "");
        assert_eq!((axis.lo, axis.hi), (-0.5, 63.5));
        assert_eq!(axis.format(20.0), "20");
        assert_eq!((cell_of(-0.5, 4), cell_of(0.49, 4), cell_of(0.51, 4), cell_of(3.5, 4)), (0, 0, 1, 3));

        // Log scale: the floor is `decades` below the maximum when something lies under it…
        assert_eq!(heat_scale([0.0, 1.0].iter(), true, 6.0), Some((-6.0, 0.0)));
        assert_eq!(heat_scale([1e-9, 10.0].iter(), true, 6.0), Some((-5.0, 1.0)));
        // …otherwise the smallest value; a constant gets one decade.
        assert_eq!(heat_scale([0.01, 1.0].iter(), true, 6.0), Some((-2.0, 0.0)));
        assert_eq!(heat_scale([0.5, 0.5].iter(), true, 6.0).map(|(lo, hi)| hi - lo), Some(1.0));
        assert_eq!(heat_scale([0.0, 0.0].iter(), true, 6.0), None);
        assert_eq!(heat_scale([0.0, 4.0].iter(), false, 6.0), Some((0.0, 4.0)));
        assert_eq!(heat_colour(0.0, Some((-6.0, 0.0)), true), viridis(0.0));
        assert_eq!(heat_colour(1.0, Some((-6.0, 0.0)), true), viridis(1.0));
        assert_eq!(heat_colour(1e-3, Some((-6.0, 0.0)), true), viridis(0.5));
        assert_eq!(heat_colour(2.0, Some((0.0, 4.0)), false), viridis(0.5));

        // Square cells, snapped to whole pixels per cell when that is cheap.
        assert_eq!(cell_plot_size(290, 311, 64, 64), (256, 256));
        assert_eq!(cell_plot_size(290, 311, 100, 100), (290, 290));
        assert_eq!(cell_plot_size(300, 300, 10, 5), (300, 150));
        assert_eq!(cell_plot_size(300, 300, 1000, 1), (300, 75));
    }
}
