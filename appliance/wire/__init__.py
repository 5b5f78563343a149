"""What a box and its hub exchange off-line, and what both sides must agree on.

The data-mule bundle a box writes and the hub imports (``bundle``), the receipt the hub
writes and the box reads (``receipt``), how either side keeps a secret on disk
(``secret_files``), and how either writes a CSV a spreadsheet cannot run
(``csv_safe``). The box's sending side (``appliance.sync``) and the hub
(``appliance.hub``) both import this package and never each other, so either can change
without dragging the other along; a format change here is a change to both.
"""
