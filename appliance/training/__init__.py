"""Learning from the box's own confirmed cases (issue 27): the consent-checked,
de-identified, signed export of images and labels (``export``) and their pixels
(``pixels``). Sits on the store, the decoder and the outcomes; never on the page, the
sender or the hub."""
