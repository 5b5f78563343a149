"""How images get into the box: DICOM network, USB media, hot folder, upload; decoding."""
