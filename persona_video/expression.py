"""What the embedded layout's coefficients mean to the mesh animator.

The embedded motion generator writes SadTalker's compact-70 layout
(``exp 0:64, angle 64:67, trans 67:70``). SadTalker's 64 expression
dimensions are PCA weights of a face model; ours are named, interpretable
controls that the landmark animator turns into vertex displacements. Only the
indices below are used; the rest stay zero. Values are unitless strengths:
0 is the portrait at rest, 1 the full shape (a little over 1 is allowed, the
animator clips to its safe range).

| index | name        | 0 ->                 | 1 ->                                     |
|-------|-------------|----------------------|------------------------------------------|
| 0     | jaw_open    | lips as in portrait  | jaw dropped, lips apart (vowel "a")      |
| 1     | lip_wide    | rest width           | corners pulled out (vowels "i", "e")     |
| 2     | lip_round   | rest shape           | lips pursed and forward ("o", "u", "w")  |
| 3     | lip_press   | rest                 | lips pressed shut ("p", "b", "m")        |
| 4     | smile       | rest                 | corners up, cheeks raised                |
| 5     | blink_left  | eye open             | upper lid on lower lid (subject's left)  |
| 6     | blink_right | eye open             | upper lid on lower lid (subject's right) |
| 7     | brow_raise  | rest                 | both brows raised                        |
| 8     | lip_funnel  | rest                 | lips opened in a small round funnel ("sh", "ch") |
| 9     | teeth_show  | rest                 | upper lip raised from the teeth ("f", "v" lower lip tuck) |

Pose (``angle 64:67``) is yaw, pitch, roll in radians (SadTalker's
convention: yaw turns the head to the subject's left when positive, pitch
tips the chin down when positive, roll tilts clockwise in the image when
positive). ``trans 67:70`` is x, y shift in face heights and z as a relative
scale change (0.02 = 2 % closer).
"""

from __future__ import annotations

JAW_OPEN = 0
LIP_WIDE = 1
LIP_ROUND = 2
LIP_PRESS = 3
SMILE = 4
BLINK_LEFT = 5
BLINK_RIGHT = 6
BROW_RAISE = 7
LIP_FUNNEL = 8
TEETH_SHOW = 9

EXPRESSION_NAMES: dict[int, str] = {
    JAW_OPEN: "jaw_open",
    LIP_WIDE: "lip_wide",
    LIP_ROUND: "lip_round",
    LIP_PRESS: "lip_press",
    SMILE: "smile",
    BLINK_LEFT: "blink_left",
    BLINK_RIGHT: "blink_right",
    BROW_RAISE: "brow_raise",
    LIP_FUNNEL: "lip_funnel",
    TEETH_SHOW: "teeth_show",
}

# Offsets into the compact layout.
EXP_START, EXP_STOP = 0, 64
YAW, PITCH, ROLL = 64, 65, 66
TRANS_X, TRANS_Y, TRANS_Z = 67, 68, 69

#: Safe pose range the animator guarantees without folded triangles, radians.
MAX_YAW_RAD = 0.20
MAX_PITCH_RAD = 0.15
MAX_ROLL_RAD = 0.10
