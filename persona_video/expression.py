"""The compact-70 motion layout's named controls, shared by the embedded motion generator
(which writes them) and the mesh renderer (which reads them): each control's column in a motion
row, and the head-pose limits. What each control does is the table in ``persona_video.motion``."""

# The compact-70 layout's named controls, as the embedded motion writes them and the mesh renderer
# reads them (unitless strengths, 0 = the portrait at rest, 1 = the full shape); what each means is
# the table in ``persona_video.motion``.
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
