"""Full-screen OpenGL window SLM (any SLM or DMD driven as a video display).

A phase SLM, amplitude SLM or DMD that appears to the computer as a monitor is driven
by drawing the level frame into a borderless window that covers the panel exactly:
one level = one screen pixel, no scaling, nearest-neighbour sampling (the fragment
shader fetches texels by integer address), vsync on, blending/dithering/sRGB off.

Colour encoding of a level (``packing``)
----------------------------------------
The video signal carries 8 bits of red, green and blue per pixel; ``packing`` says where
the level's bits go (:mod:`hwio.packing`, which defines every packing and its inverse):
``"gray8"`` (alias ``"gray"``, R = G = B = level; default for ``bit_depth <= 8``),
``"rg16"`` (high byte red, low byte green; default for ``bit_depth > 8``),
``"meadowlark10"`` (level bits 9-2 in red, 1-0 in blue), ``"santec10"`` (10 bits spread
over R, G, B), a lab's own field list such as ``"R[7:0]=L[9:2] B[7:6]=L[1:0]"``, or the
DMD bit-plane modes ``"dmd24"`` / ``"dmd24_ti"`` (``bit_depth = 1``).  ``gray8`` and
``rg16`` are packed by the fragment shader from one- and two-channel textures; every other
packing is packed on the CPU by :mod:`hwio.packing` into red, green and blue planes
(contiguous, so packing stays fast) uploaded as one one-channel texture three panels high,
which the shader reads back per channel.  Both paths are integer-exact (texelFetch, 8-bit
channels, no filtering).

DMD bit-plane mode (``packing="dmd24"`` or ``"dmd24_ti"``)
----------------------------------------------------------
A DMD controller in video pattern mode shows each 24-bit video frame as 24 binary
patterns.  ``show(levels)`` of a 1-bit frame writes the pattern into one bit plane of the
RGB frame the window holds and keeps the other 23, so 24 consecutive ``show`` calls fill
one video frame.  The plane is :attr:`WindowSLM.next_plane` (0 after opening; each show
advances it by one, wrapping after 23; :meth:`WindowSLM.select_plane` sets it).  The
returned :class:`BitPlaneShowToken` carries ``plane`` (the index of the pattern in the
controller's sequence) and ``video_frame`` (how many times the sequence wrapped before it).

Headless use
------------
``headless=True`` renders into an off-screen EGL surface (no X server needed) with an
explicit 8-bit-per-channel colour config, which is what makes that mode pixel-exact.
pyglet fixes its mode at import, so one process uses either headless or on-screen
windows.  Under Xvfb the on-screen mode reads back pixel-exact with ``mss``.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import numpy as np

from hwio.devices import SLM, DeviceError, ShowToken, SLMWriteError, Timeline
from hwio.drivers import one_line, require
from hwio.packing import PACKINGS, get_packing

__all__ = ["WindowSLM", "BitPlaneShowToken"]

_VERTEX_SRC = """#version 330 core
void main() {
    // one triangle that covers the whole viewport
    vec2 p = vec2(gl_VertexID == 1 ? 3.0 : -1.0, gl_VertexID == 2 ? 3.0 : -1.0);
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

_FRAGMENT_SRC = """#version 330 core
uniform sampler2D u_levels;
uniform int u_rows;
uniform int u_packing;
out vec4 color;
void main() {
    // integer texel address: screen pixel (x, y from bottom) <- level[row, col]
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 t = texelFetch(u_levels, ivec2(p.x, u_rows - 1 - p.y), 0);
    if (u_packing == 0) {
        color = vec4(t.r, t.r, t.r, 1.0);
    } else if (u_packing == 1) {
        // texture holds little-endian uint16: r = low byte, g = high byte
        color = vec4(t.g, t.r, 0.0, 1.0);
    } else {
        // packed on the CPU (hwio.packing), planar: red, green, blue planes stacked in one texture
        int r = u_rows - 1 - p.y;
        float g = texelFetch(u_levels, ivec2(p.x, r + u_rows), 0).r;
        float b = texelFetch(u_levels, ivec2(p.x, r + 2 * u_rows), 0).r;
        color = vec4(t.r, g, b, 1.0);
    }
}
"""

#: shader modes: 0 one-channel texture shown as gray, 1 little-endian uint16 as (high, low, 0),
#: 2 RGB packed on the CPU as three stacked one-channel planes (rows 0..H-1 red, H..2H-1 green, ...)
_GRAY, _RG16, _RGB = 0, 1, 2


@dataclass(frozen=True)
class BitPlaneShowToken(ShowToken):
    """Receipt of a DMD bit-plane ``show``: also the plane the pattern went to.

    ``plane`` is the bit plane (0..23) = the pattern's index in the controller's sequence;
    ``video_frame`` counts how often the plane sequence wrapped before this pattern.
    """

    plane: int = 0
    video_frame: int = 0


def _import_pyglet(headless: bool):
    """Import pyglet in the requested mode or raise a one-line error."""
    pyglet = require("pyglet", "WindowSLM")
    already = "pyglet.window" in sys.modules or "pyglet.gl" in sys.modules
    if already:
        if bool(pyglet.options["headless"]) != bool(headless):
            mode = "headless" if pyglet.options["headless"] else "on-screen"
            raise DeviceError(f"WindowSLM: pyglet is already running in {mode} mode in this process; "
                              f"create headless={headless} windows in a separate process")
    else:
        pyglet.options["headless"] = bool(headless)
    try:
        import pyglet.gl  # noqa: F401  (creates the shadow window/context)
        import pyglet.window  # noqa: F401
    except Exception as exc:  # NoSuchDisplayException, missing libGL/EGL
        hint = ("check the EGL/GL drivers" if headless else
                "set DISPLAY (or run under Xvfb), or pass headless=True")
        raise DeviceError(f"WindowSLM: cannot open a display ({type(exc).__name__}: "
                          f"{one_line(exc)}); {hint}") from None
    return pyglet


def _placement(pyglet, name: str, screen, explicit: bool, x, y, width, height, shape):
    """Checked ``(screen, x, y, width, height)`` (px) of a window SLM: the placement given or the whole screen.

    Raises ValueError for a missing screen, a window off the screen or one that is not ``shape``.
    """
    screens = pyglet.display.get_display().get_screens()
    if not 0 <= int(screen) < len(screens):
        raise ValueError(f"{name}: screen index {screen} does not exist; "
                         f"{len(screens)} screen(s) found: "
                         + ", ".join(f"{s.width}x{s.height}+{s.x}+{s.y}" for s in screens))
    scr = screens[int(screen)]
    if explicit:
        x, y, width, height = int(x or 0), int(y or 0), int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"{name}: width and height must be > 0, got {width}x{height}")
        if x < 0 or y < 0 or x + width > scr.width or y + height > scr.height:
            raise ValueError(f"{name}: window {width}x{height} at ({x}, {y}) does not fit on screen "
                             f"{screen} ({scr.width}x{scr.height}); shrink it or move it")
    else:
        x, y, width, height = 0, 0, int(scr.width), int(scr.height)
    if shape is not None and tuple(int(s) for s in shape) != (height, width):
        raise ValueError(f"{name}: the window is {height}x{width} (rows x cols) but shape={tuple(shape)} "
                         f"was requested; check the screen index/placement or the panel resolution")
    return scr, x, y, width, height


class WindowSLM(SLM):
    """SLM shown in a full-screen (or placed) borderless OpenGL window.

    Parameters
    ----------
    name : device name.
    screen : index of the screen (monitor) that is the SLM panel.
    x, y : offset in pixels of the window's top-left corner from the screen's top-left
        corner (explicit placement; default 0 when ``width``/``height`` are given).
    width, height : window size in pixels.  Omit all of ``x, y, width, height`` to cover
        the whole screen (true full-screen window).
    shape : optional expected panel (rows, cols); a mismatch with the window raises.
    bit_depth : panel levels are 0..2**bit_depth-1.
    packing : how a level is put into the RGB video signal: a name of
        :data:`hwio.packing.PACKINGS` (``"gray8"``/``"gray"``, ``"rg16"``, ``"meadowlark10"``,
        ``"santec10"``, ``"dmd24"``, ``"dmd24_ti"``), a field spec such as
        ``"R[7:0]=L[9:2] B[1:0]=L[1:0]"``, or a packing object; default ``"gray8"`` for
        ``bit_depth <= 8``, else ``"rg16"``.  A packing that cannot carry ``bit_depth`` raises
        ValueError naming the ones that can.
    pixel_pitch_m, settle_time_s, timeline : see :class:`hwio.devices.SLM`.
    vsync : synchronise buffer swaps with the display refresh.
    headless : render off-screen through EGL (self-tests on machines without a display).
    """

    def __init__(self, name: str = "window-slm", *, screen: int = 0,
                 x: int | None = None, y: int | None = None,
                 width: int | None = None, height: int | None = None,
                 shape: tuple[int, int] | None = None, bit_depth: int = 8,
                 packing=None, pixel_pitch_m: float = 8e-6,
                 settle_time_s: float = 0.0, vsync: bool = True, headless: bool = False,
                 timeline: Timeline | None = None):
        if packing is None:
            packing = "gray8" if int(bit_depth) <= 8 else "rg16"
        scheme = get_packing(packing, int(bit_depth), name)
        explicit = any(v is not None for v in (x, y, width, height))
        if explicit and (width is None or height is None):
            raise ValueError(f"{name}: explicit placement needs width and height (x, y default to 0)")

        pyglet = _import_pyglet(headless)
        self._pyglet = pyglet
        self._gl = gl = pyglet.gl
        scr, x, y, width, height = _placement(pyglet, name, screen, explicit, x, y, width, height, shape)
        super().__init__(name, (height, width), bit_depth=bit_depth, pixel_pitch_m=pixel_pitch_m,
                         settle_time_s=settle_time_s, timeline=timeline)
        self.packing_scheme = scheme
        self.packing = scheme.name if scheme.name != "custom" else scheme.spec
        # gray8 and rg16 are packed by the shader; everything else on the CPU (planar RGB)
        if scheme is PACKINGS["gray8"]:
            self._mode = _GRAY
        elif scheme is PACKINGS["rg16"]:
            self._mode = _RG16
        else:
            self._mode = _RGB
        self.next_plane = 0                 # DMD bit-plane mode: plane of the next show
        self.last_plane: int | None = None
        self.video_frame = 0                # DMD bit-plane mode: wraps of the plane sequence
        self.screen_index = int(screen)
        self.headless = bool(headless)
        self.vsync = bool(vsync)
        self._origin = (int(scr.x) + x, int(scr.y) + y)   # requested top-left, desktop coordinates
        self._window = None
        self._program = None
        self._texture = None
        self._vao = None
        self._current = self._texture_data(np.zeros(self.shape, self.level_dtype))

        config = gl.Config(double_buffer=True, red_size=8, green_size=8, blue_size=8,
                           depth_size=0, stencil_size=0)
        Window = pyglet.window.Window
        try:
            if explicit:
                win = Window(width, height, caption=name, style=Window.WINDOW_STYLE_BORDERLESS,
                             screen=scr, config=config, vsync=self.vsync, visible=False)
                win.set_location(*self._origin)
                win.set_visible(True)
            else:
                win = Window(caption=name, fullscreen=True, screen=scr, config=config, vsync=self.vsync)
        except Exception as exc:
            raise DeviceError(f"{name}: could not create the OpenGL window "
                              f"({type(exc).__name__}: {one_line(exc)})") from None
        self._window = win
        try:
            win.set_mouse_visible(False)
            fb = tuple(win.get_framebuffer_size())
            if fb != (width, height):
                raise DeviceError(f"{name}: framebuffer is {fb[0]}x{fb[1]} for a {width}x{height} window "
                                  f"(display scaling?); disable desktop scaling for the SLM screen")
            win.push_handlers(on_close=self._ignore_event, on_key_press=self._ignore_key,
                              on_expose=self._redraw, on_draw=self._ignore_event)
            self._setup_gl()
            self._draw(self._current)
        except BaseException:
            self.close()
            raise

    # -- pyglet event handlers: an SLM window never closes or resizes on user input -----------
    @staticmethod
    def _ignore_event(*args):
        return True   # EVENT_HANDLED

    @staticmethod
    def _ignore_key(symbol, modifiers):
        return True

    def _redraw(self):
        if self._window is not None:
            self._draw(self._current, events=False)
        return True

    # -- GL plumbing ---------------------------------------------------------------------------
    def _setup_gl(self) -> None:
        gl = self._gl
        from pyglet.graphics.shader import Shader, ShaderProgram
        self._window.switch_to()
        max_size = gl.GLint()
        gl.glGetIntegerv(gl.GL_MAX_TEXTURE_SIZE, ctypes.byref(max_size))
        tex_rows = self.shape[0] * (3 if self._mode == _RGB else 1)
        if max(tex_rows, self.shape[1]) > max_size.value:
            raise DeviceError(f"{self.name}: panel {self.shape} exceeds the GPU texture limit "
                              f"{max_size.value}" + (" (RGB planes stack three panels high; use packing "
                                                     "'gray8' or 'rg16' if the panel takes it)"
                                                     if self._mode == _RGB else ""))
        self._program = ShaderProgram(Shader(_VERTEX_SRC, "vertex"), Shader(_FRAGMENT_SRC, "fragment"))
        tex = gl.GLuint()
        gl.glGenTextures(1, ctypes.byref(tex))
        self._texture = tex
        gl.glBindTexture(gl.GL_TEXTURE_2D, tex)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_NEAREST)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_NEAREST)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
        internal, fmt = self._tex_format()
        rows, cols = self.shape
        gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, internal, cols, tex_rows, 0, fmt, gl.GL_UNSIGNED_BYTE, None)
        vao = gl.GLuint()
        gl.glGenVertexArrays(1, ctypes.byref(vao))
        self._vao = vao
        self._program.use()
        self._program["u_levels"] = 0
        self._program["u_rows"] = rows
        self._program["u_packing"] = self._mode
        self._program.stop()

    def _tex_format(self):
        gl = self._gl
        if self._mode == _GRAY:
            return gl.GL_R8, gl.GL_RED
        if self._mode == _RG16:
            return gl.GL_RG8, gl.GL_RG
        return gl.GL_R8, gl.GL_RED          # planar RGB: three one-channel planes stacked

    @property
    def plane_mode(self) -> bool:
        """Whether the panel is a DMD in bit-plane (pattern) mode."""
        return bool(self.packing_scheme.plane_mode)

    def _texture_data(self, levels: np.ndarray, plane: int | None = None) -> np.ndarray:
        """The texels that show ``levels``: the level frame, or planar RGB (3, rows, cols) from :mod:`hwio.packing`.

        In bit-plane mode the pattern goes into ``plane`` of a copy of the frame shown now.
        """
        if self._mode == _GRAY:
            return np.ascontiguousarray(levels, dtype=np.uint8)
        if self._mode == _RG16:
            return np.ascontiguousarray(levels, dtype="<u2")
        if self.plane_mode:
            planes = getattr(self, "_current", None)
            planes = np.zeros((3,) + self.shape, np.uint8) if planes is None else planes.copy()
            return self.packing_scheme.set_plane_planar(planes, levels, 0 if plane is None else plane)
        return self.packing_scheme.pack_planar(levels, check=False)

    def _draw(self, data: np.ndarray, events: bool = True) -> None:
        """Upload the texels ``data``, draw, swap buffers and wait until the GPU is done."""
        self._render(data, events)
        self._window.flip()
        self._gl.glFinish()   # returns once the swap has been executed

    def _render(self, data: np.ndarray, events: bool = True) -> None:
        """Upload the texels ``data`` (:meth:`_texture_data`) and draw them into the back buffer."""
        gl = self._gl
        win = self._window
        rows, cols = self.shape
        win.switch_to()
        if events:
            win.dispatch_events()
        fb = tuple(win.get_framebuffer_size())
        if fb != (cols, rows):
            raise SLMWriteError(f"{self.name}: window is now {fb[0]}x{fb[1]}, expected {cols}x{rows} "
                                f"(moved/resized by the window manager?)")
        _, fmt = self._tex_format()
        gl.glActiveTexture(gl.GL_TEXTURE0)
        gl.glBindTexture(gl.GL_TEXTURE_2D, self._texture)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, cols, rows * (3 if self._mode == _RGB else 1), fmt,
                           gl.GL_UNSIGNED_BYTE, data.ctypes.data_as(ctypes.c_void_p))
        gl.glViewport(0, 0, cols, rows)
        for cap in (gl.GL_BLEND, gl.GL_DITHER, gl.GL_SCISSOR_TEST, gl.GL_DEPTH_TEST):
            gl.glDisable(cap)
        if hasattr(gl, "GL_FRAMEBUFFER_SRGB"):
            gl.glDisable(gl.GL_FRAMEBUFFER_SRGB)
        self._program.use()
        gl.glBindVertexArray(self._vao)
        gl.glDrawArrays(gl.GL_TRIANGLES, 0, 3)
        gl.glBindVertexArray(0)
        self._program.stop()

    # -- SLM hook --------------------------------------------------------------------------------
    def _show_hw(self, levels: np.ndarray) -> None:
        if self._window is None:
            raise DeviceError(f"{self.name}: the window SLM is closed; create a new WindowSLM")
        plane = self.next_plane if self.plane_mode else None
        data = self._texture_data(levels, plane)
        try:
            self._draw(data)
        except DeviceError:
            raise
        except Exception as exc:   # pyglet GLException and friends
            raise SLMWriteError(f"{self.name}: drawing the frame failed "
                                f"({type(exc).__name__}: {one_line(exc)})") from None
        self._current = data
        if plane is not None:
            if self.last_plane is not None and plane <= self.last_plane:
                self.video_frame += 1
            self.last_plane = plane
            self.next_plane = (plane + 1) % self.packing_scheme.n_planes

    def show(self, levels: np.ndarray) -> ShowToken:
        """Display a level frame; in DMD bit-plane mode return a :class:`BitPlaneShowToken`."""
        token = super().show(levels)
        if not self.plane_mode:
            return token
        return BitPlaneShowToken(token.device, token.frame_index, token.shown_s, token.settled_s,
                                 plane=self.last_plane, video_frame=self.video_frame)

    def select_plane(self, plane: int) -> None:
        """DMD bit-plane mode: the next ``show`` writes bit plane ``plane`` (0..23)."""
        if not self.plane_mode:
            raise ValueError(f"{self.name}: select_plane needs a bit-plane packing ('dmd24' or 'dmd24_ti'), "
                             f"this panel uses {self.packing!r}")
        self.packing_scheme.plane_bit(plane)          # validates the index
        self.next_plane = int(plane)

    def clear_planes(self) -> None:
        """DMD bit-plane mode: set all 24 planes to 0 (shown at the next ``show``)."""
        if self.plane_mode:
            self._current = np.zeros((3,) + self.shape, np.uint8)

    # -- self-test -------------------------------------------------------------------------------
    @property
    def geometry(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the window on the desktop, in pixels (where it really is)."""
        rows, cols = self.shape
        if self._window is None or self.headless:
            return (*self._origin, cols, rows)
        x, y = self._window.get_location()
        return int(x), int(y), cols, rows

    def read_back_rgb(self, source: str = "auto") -> np.ndarray:
        """Read the displayed window back as a (rows, cols, 3) uint8 RGB image.

        Parameters
        ----------
        source : ``"screen"`` (screenshot of the desktop through mss: what the display
            really shows), ``"gl"`` (the current frame rendered again into the back
            buffer and read with glReadPixels: checks upload, shader and framebuffer
            format, not the display), or ``"auto"`` (screen, or gl when headless).
        """
        if self._window is None:
            raise DeviceError(f"{self.name}: the window SLM is closed")
        if source == "auto":
            source = "gl" if self.headless else "screen"
        if source == "screen":
            if self.headless:
                raise ValueError(f"{self.name}: a headless window is not on any screen; use source='gl'")
            mss = require("mss", "WindowSLM.read_back")
            self._window.switch_to()
            self._window.dispatch_events()
            self._gl.glFinish()
            x, y, cols, rows = self.geometry
            factory = getattr(mss, "MSS", None) or mss.mss
            with factory() as grabber:
                shot = grabber.grab({"left": x, "top": y, "width": cols, "height": rows})
                bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
            return np.ascontiguousarray(bgra[:, :, 2::-1])
        if source == "gl":
            gl = self._gl
            rows, cols = self.shape
            self._render(self._current, events=False)
            gl.glFinish()
            buf = np.empty((rows, cols, 4), np.uint8)
            gl.glReadBuffer(gl.GL_BACK)
            gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
            gl.glReadPixels(0, 0, cols, rows, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE,
                            buf.ctypes.data_as(ctypes.c_void_p))
            return np.ascontiguousarray(buf[::-1, :, :3])
        raise ValueError(f"{self.name}: read-back source must be 'auto', 'screen' or 'gl', got {source!r}")

    def read_back(self, source: str = "auto", plane: int | None = None) -> np.ndarray:
        """Decode the displayed window back into levels (``level_dtype``, ``shape``).

        The inverse of the packing (:meth:`hwio.packing.FieldPacking.unpack`); in bit-plane
        mode the pattern of ``plane`` (default: the plane shown last).  Compare with
        :attr:`last_levels` to check the display path is pixel-exact.
        """
        rgb = self.read_back_rgb(source)
        if self.plane_mode:
            k = plane if plane is not None else (self.last_plane if self.last_plane is not None else 0)
            return self.packing_scheme.unpack(rgb, k).astype(self.level_dtype)
        return self.packing_scheme.unpack(rgb).astype(self.level_dtype)

    def read_back_planes(self, source: str = "auto") -> np.ndarray:
        """DMD bit-plane mode: all 24 patterns the window shows, (24, rows, cols) uint8 by plane."""
        if not self.plane_mode:
            raise ValueError(f"{self.name}: read_back_planes needs a bit-plane packing, this panel uses "
                             f"{self.packing!r}")
        return self.packing_scheme.unpack_planes(self.read_back_rgb(source))

    def self_test(self, seed: int = 0, source: str = "auto") -> int:
        """Show a random frame and a checkerboard, read both back; return the number of wrong pixels.

        The panel is left showing the checkerboard.
        """
        rng = np.random.default_rng(seed)
        rows, cols = self.shape
        checker = ((np.add.outer(np.arange(rows), np.arange(cols)) % 2) * self.max_level)
        wrong = 0
        for frame in (rng.integers(0, self.max_level + 1, self.shape), checker):
            self.show(frame.astype(self.level_dtype))
            wrong += int(np.count_nonzero(self.read_back(source) != self.last_levels))
        return wrong

    def close(self) -> None:
        """Close the window (idempotent)."""
        win, self._window = self._window, None
        if win is None:
            return
        gl = self._gl
        try:
            win.switch_to()
            if self._texture is not None:
                gl.glDeleteTextures(1, ctypes.byref(self._texture))
            if self._vao is not None:
                gl.glDeleteVertexArrays(1, ctypes.byref(self._vao))
            if self._program is not None:
                self._program.delete()
        except Exception:
            pass   # the context may already be gone; the window close frees everything
        finally:
            self._texture = self._vao = self._program = None
            win.close()
