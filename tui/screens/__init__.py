"""The app's screens: the inspector, the loading screen over it, and the modals (help, a
feature's card, a value prompt)."""
