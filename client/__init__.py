"""Hospital role of the endofed Flower app (ClientApp).

Shipped inside the Flower app bundle (FAB), never installed into site-packages as a top-level ``client``
package. It only translates between Flower messages and ``endofed`` library calls.
"""
