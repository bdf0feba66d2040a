"""The TFLite toolchain: export variants, read a ``.tflite`` flatbuffer, measure it in
LiteRT, and compare variants in a report.
"""
