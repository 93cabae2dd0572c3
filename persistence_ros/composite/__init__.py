"""
A second scene source: objects composited onto real stereo photographs.

Moving objects, their mirror images, flares and detector clutter are composited onto real
rectified (and distorted) stereo photographs, with exact truth. Built without MuJoCo or rclpy
(numpy + OpenCV; the photographs come from scikit-image and Debian's opencv-doc), so that a
model trained on the simulator meets another renderer's look. See docs/composite.md.
"""
