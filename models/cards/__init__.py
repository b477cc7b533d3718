"""Feature cards built where the user is: from the weights (`weights`), and from text."""
