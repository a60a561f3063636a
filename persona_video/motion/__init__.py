"""Stage 3a, motion: takes the Speech (audio, timing map, phonemes) and gives a MotionTrack,
(T, 70) float32 coefficients at 25 fps in SadTalker's compact-70 layout.

Backends: the embedded generator (``generator``: visemes from the phonemes (``visemes``), blinks,
head motion from speech energy, pitch and emphasis) and SadTalker's audio2coeff (``sadtalker``).
``stage`` chooses between them once per request and saves the track in the job folder.

What the embedded layout's coefficients mean to the mesh animator (the index constants are in
``persona_video.types``):

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
