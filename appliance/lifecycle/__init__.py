"""Model bundles over their life: pack and sign (programme side), trust a programme's
key, install a signed file (verified before anything is put in place), run it in
shadow, compare, activate and roll back.

``keys`` the trusted programme keys, ``pack`` the signed file, ``checks`` what a bundle
must agree with on this box, ``install`` putting one in place, ``activation`` choosing
which version screens, ``compare`` shadow against active. The store keeps the states
(``appliance.store.model_versions``); the screening workers load what it says.
"""
